"""Classification at dataset scale: streamed over files, folders or an index's vectors; prediction files; `eval`."""

from clipapp._compat import BECAME_PACKAGES, forward_getattr

__getattr__ = forward_getattr(__name__, BECAME_PACKAGES[__name__])  # the pre-0.2 `clipapp.classify` module's names
