"""The error every user-facing failure derives from: the CLI prints its message, exits 2."""


class SdfError(Exception):
    """A failure the user can act on; ``str()`` is one or more complete sentences."""

    exit_code = 2
