"""A region map (clipapp/model/regions.py) drawn over its image, with Pillow: for the page and `explain --out`.

The grid is scaled to its own range (0 where the label matches least, 1 where most), upsampled bilinearly to the
image and blended in with the colour map, more opaque where the label matches more, so the image stays readable
where it does not. Small images (Fashion-MNIST's 28 pixels) are enlarged without smoothing so the cells show.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image

from clipapp.errors import ClipAppError

OVERLAY_CMAP = "jet"  # the colour map of the CAM literature: red reads as "here" without a legend
MAX_ALPHA = 0.6  # the colour's opacity where the label matches most
MIN_SIDE = 224  # smaller images are enlarged to this long side (nearest neighbour)
MAX_SIDE = 512  # larger ones are shrunk to it: an overlay is a thumbnail, not a full-size copy
PNG_COMPRESS_LEVEL = 1  # as viz/heatmap_image.py: level 6 took 4x longer for a file ~25% smaller


def _display_size(width: int, height: int) -> tuple[int, int]:
    long_side = max(width, height)
    target = min(max(long_side, MIN_SIDE), MAX_SIDE)
    scale = target / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def overlay(image: Image.Image, grid: np.ndarray) -> Image.Image:
    """`image` (any mode) with `grid` (rows, cols; rows top to bottom) blended over it, as an RGB image."""
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0 or not np.isfinite(grid).all():
        raise ClipAppError(f"A region map must be a finite 2-D grid; got shape {grid.shape}.")
    size = _display_size(*image.size)
    resample = Image.Resampling.NEAREST if max(image.size) < MIN_SIDE else Image.Resampling.LANCZOS
    base = np.asarray(image.convert("RGB").resize(size, resample), dtype=np.float32) / 255
    span = float(grid.max() - grid.min())
    scaled = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
    heat = np.asarray(Image.fromarray(scaled, mode="F").resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, 1)[..., None]
    colour = matplotlib.colormaps[OVERLAY_CMAP](heat[..., 0])[..., :3]
    alpha = MAX_ALPHA * heat
    blended = base * (1 - alpha) + colour * alpha
    return Image.fromarray(np.round(blended * 255).astype(np.uint8), mode="RGB")


def overlay_png(image: Image.Image, grid: np.ndarray) -> bytes:
    """`overlay` encoded as PNG."""
    buffer = io.BytesIO()
    overlay(image, grid).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
