"""The error every user-facing failure derives from: the CLI prints its message, exits 2."""


class SdfError(Exception):
    """A failure the user can act on; ``str()`` is one or more complete sentences.

    ``settings`` names the library settings the message speaks of (``learning_rate``); the
    CLI writes them as its flags (``--lr``)."""

    exit_code = 2
    settings: tuple[str, ...] = ()

    def __init__(self, *args: object, settings: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.settings = settings


class ConfigError(SdfError, ValueError):
    """A setting is malformed (project file, ``--set``, environment variable); the message
    names where it came from (file and key, or variable) and what is accepted."""
