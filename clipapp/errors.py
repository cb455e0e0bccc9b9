"""User-facing errors.

Anything raised as `ClipAppError` carries a message meant for the person using the app: the UI shows it in the
page, the CLI prints it on stderr and exits non-zero. Everything else is a bug and is logged with its traceback.
"""


class ClipAppError(ValueError):
    """A problem with the user's input or environment, described in words the user can act on."""


class ImageLoadError(ClipAppError):
    """An upload or file that is not a usable image."""


class ModelLoadError(ClipAppError):
    """A model spec or checkpoint that cannot be loaded."""


class MissingExtraError(ClipAppError):
    """A feature whose optional dependency (a pyproject extra such as `clipapp[sweeps]`) is not installed."""
