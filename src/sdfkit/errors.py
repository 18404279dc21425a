"""The error every user-facing failure derives from: the CLI prints its message, exits 2."""


class SdfError(Exception):
    """A failure the user can act on; ``str()`` is one or more complete sentences."""

    exit_code = 2


class ConfigError(SdfError, ValueError):
    """A setting is malformed (project file, ``--set``, environment variable); the message
    names where it came from (file and key, or variable) and what is accepted."""
