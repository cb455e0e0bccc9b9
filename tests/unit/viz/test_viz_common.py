"""clipapp.viz.common: the pieces both heatmap renderers (matplotlib and Pillow) share."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.viz.common import clip, color_range, dark_ink_on, heatmap_grid, shorten


def test_heatmap_grid_is_texts_by_images_and_checks_its_input():
    grid, texts = heatmap_grid(np.zeros((2, 3)), ["a", "b"], [1, 2, 3])
    assert grid.shape == (3, 2) and texts == ["1", "2", "3"]
    with pytest.raises(ValueError, match="shape"):
        heatmap_grid(np.zeros((2, 3)), ["a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="NaN"):
        heatmap_grid(np.array([[np.nan]]), None, ["x"])
    with pytest.raises(ClipAppError):
        heatmap_grid(np.zeros((0, 1)), None, ["x"])


def test_colour_range_widens_a_flat_matrix():
    assert color_range(np.array([[0.2, 0.3]])) == (0.2, 0.3)
    lo, hi = color_range(np.array([[0.25, 0.25]]))
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.3)


def test_ink_clip_and_shorten():
    assert dark_ink_on((1.0, 1.0, 0.0)) and not dark_ink_on((0.1, 0.0, 0.3, 1.0))
    assert clip(5, 0, 3) == 3.0 and clip(-1, 0, 3) == 0.0
    assert shorten("a  long\nlabel", 20) == "a long label" and shorten("abcdef", 4) == "abc\u2026"
