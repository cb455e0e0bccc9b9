"""The region-map overlay (clipapp/viz/region_overlay.py): the colour lands where the grid is high, rows top to
bottom, and the image shows through where it is low."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.viz.region_overlay import MIN_SIDE, overlay, overlay_png


def test_colour_lands_where_the_grid_is_high():
    image = Image.new("RGB", (56, 28), (128, 128, 128))
    grid = np.zeros((4, 8), dtype=np.float32)
    grid[0, 0] = 1.0  # the top-left cell only
    out = np.asarray(overlay(image, grid), dtype=np.int16)
    assert out.shape == (MIN_SIDE // 2, MIN_SIDE, 3)  # enlarged to the long side, aspect kept
    top_left, bottom_right = out[5, 5], out[-5, -5]
    assert np.abs(top_left - 128).max() > 40  # coloured
    assert top_left[0] > top_left[2]  # "jet": red where the grid is highest
    assert (bottom_right == 128).all()  # where the grid is lowest the image shows as it is


def test_large_images_are_shrunk_and_flat_grids_leave_the_image():
    image = Image.new("RGB", (2000, 1000), (10, 200, 30))
    out = overlay(image, np.full((4, 8), 0.3))
    assert out.size == (512, 256)
    assert np.abs(np.asarray(out, dtype=np.int16) - np.array([10, 200, 30])).max() <= 60


def test_png_round_trips():
    image = Image.new("L", (300, 300), 50)
    data = overlay_png(image, np.arange(9, dtype=np.float32).reshape(3, 3))
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.size == (300, 300) and decoded.mode == "RGB"


@pytest.mark.parametrize("grid", [np.zeros((0, 3)), np.zeros(4), np.array([[np.nan, 1.0]])])
def test_bad_grids_are_clipapp_errors(grid):
    with pytest.raises(ClipAppError, match="finite 2-D grid"):
        overlay(Image.new("RGB", (10, 10)), grid)
