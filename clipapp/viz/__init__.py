"""Figures: matplotlib for files and the CLI, Pillow for the page's heatmap."""

from clipapp._compat import BECAME_PACKAGES, forward_getattr

__getattr__ = forward_getattr(__name__, BECAME_PACKAGES[__name__])  # the pre-0.2 `clipapp.viz` module's names
