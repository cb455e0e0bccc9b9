"""The similarity heatmap drawn straight into a Pillow image, for the web page.

The same figure as `viz.similarity_heatmap` (OpenAI's CLIP notebook: texts as rows, thumbnails above the columns,
the cosine in each cell, viridis, a colour bar), without matplotlib's artist machinery: at 20 images x 30 labels the
matplotlib figure took ~0.3 s to build and ~1.1 s to draw and encode on this project's 2-core machine (600 Text
artists laid out one by one); this draws and PNG-encodes it in a few tens of milliseconds (docs/benchmarks.md).
Written by hand because no plotting library draws a table of numbers faster than Pillow's text calls.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from clipapp.viz.common import (
    HEATMAP_CMAP,
    HEATMAP_TITLE,
    LABEL_CHARS,
    clip,
    color_range,
    dark_ink_on,
    heatmap_grid,
    shorten,
    thumbnail_rgba,
)

FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # matplotlib's own font
MAX_GRID_W, MAX_GRID_H = 1200, 1800  # pixels: a 20 x 30 matrix fits, as the matplotlib figure's 12 x 18 inches
PNG_COMPRESS_LEVEL = 1  # level 6 (the default) took 4x longer for a file ~25% smaller


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_FILE), size)


def _text_w(font: ImageFont.FreeTypeFont, text: str) -> int:
    return int(font.getlength(text))


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int = 3) -> list[str]:
    words = " ".join(str(text).split()).split(" ")
    lines: list[str] = []
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and _text_w(font, f"{line} {words[0]}") <= width:
            line += " " + words.pop(0)
        lines.append(line)
    if words:
        lines[-1] = shorten(lines[-1] + " " + " ".join(words), max(4, len(lines[-1])))
    return lines


@functools.lru_cache(maxsize=4096)
def _stamp(text: str, size: int, ink: tuple[int, int, int]) -> Image.Image:
    """`text` drawn once on a transparent tile: a 20 x 30 matrix shows 600 values but only a few dozen distinct
    strings, and pasting a tile costs a fraction of laying the text out again (Font.render was 80% of the time)."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text, anchor="mm")
    # getbbox is typed float; FreeType's boxes are whole pixels, ceil keeps a fractional one inside the tile
    tile = Image.new("RGBA", (math.ceil(right - left) + 2, math.ceil(bottom - top) + 2), ink + (0,))
    ImageDraw.Draw(tile).text((1 - left, 1 - top), text, fill=ink + (255,), font=font, anchor="mm")
    return tile


def _cell_colors(grid: np.ndarray, lo: float, hi: float) -> np.ndarray:
    cmap = matplotlib.colormaps[HEATMAP_CMAP]
    return (cmap((grid - lo) / (hi - lo))[..., :3] * 255).round().astype(np.uint8)


def _ink(rgb: np.ndarray) -> tuple[int, int, int]:
    """Black or white, whichever reads better on the cell colour (0..255)."""
    return (0, 0, 0) if dark_ink_on(np.asarray(rgb[:3], dtype=np.float64) / 255) else (255, 255, 255)


def similarity_heatmap_image(
    matrix: np.ndarray, images: Sequence[object] | None, texts: Sequence[str], *, title: str | None = None
) -> Image.Image:
    """`matrix` (n_images, n_texts) as an RGB image: texts as rows, images as columns with thumbnails on top."""
    grid, texts = heatmap_grid(matrix, images, texts)  # rows = texts, columns = images
    n_txt, n_img = grid.shape
    cell = int(clip(min(MAX_GRID_W / n_img, MAX_GRID_H / (n_txt + 1.2)), 50, 110))
    value_font, label_font = _font(int(clip(cell * 0.26, 9, 19))), _font(int(clip(cell * 0.25, 11, 18)))
    title_font, tick_font = _font(17 if n_img > 3 else 15), _font(max(10, int(label_font.size * 0.8)))
    labels = [shorten(t, LABEL_CHARS) for t in texts]
    label_w = max(_text_w(label_font, t) for t in labels) + 20
    thumbs_h = int(cell * 1.1) if images is not None else 0
    bar_w, bar_gap, bar_labels = 18, 15, 55
    grid_w, grid_h = n_img * cell, n_txt * cell
    width = max(label_w + 15 + grid_w + bar_gap + bar_w + bar_labels, 450)
    heading = title if title is not None else HEATMAP_TITLE
    heading_lines = _wrap(heading, title_font, width - 30)
    title_h = 20 + int(len(heading_lines) * title_font.size * 1.3)
    bottom = 25 if images is not None else 45
    height = title_h + thumbs_h + grid_h + bottom
    left = label_w + 15 + (width - (label_w + 15 + grid_w + bar_gap + bar_w + bar_labels)) // 2
    top = title_h + thumbs_h

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 12
    for line in heading_lines:
        draw.text(
            (left + grid_w / 2 if width > grid_w + 2 * label_w else width / 2, y),
            line,
            fill="black",
            font=title_font,
            anchor="ma",
        )
        y += int(title_font.size * 1.3)

    lo, hi = color_range(grid)
    colors = _cell_colors(grid, lo, hi)
    canvas.paste(Image.fromarray(colors, "RGB").resize((grid_w, grid_h), Image.Resampling.NEAREST), (left, top))
    for r in range(n_txt):
        cy = top + r * cell + cell / 2
        draw.text((left - 6, cy), labels[r], fill="black", font=label_font, anchor="rm")
        for c in range(n_img):
            tile = _stamp(f"{grid[r, c]:.2f}", value_font.size, _ink(colors[r, c]))
            canvas.paste(tile, (int(left + c * cell + cell / 2 - tile.width / 2), int(cy - tile.height / 2)), tile)
    if images is not None:
        side = int(cell * 0.94)
        for c, img in enumerate(images):
            thumb = Image.fromarray(thumbnail_rgba(img, side), "RGBA")
            canvas.paste(thumb, (left + c * cell + (cell - side) // 2, title_h + (thumbs_h - side) // 2 - 2), thumb)
    else:
        for c in range(n_img):
            draw.text(
                (left + c * cell + cell / 2, top + grid_h + 6),
                f"image {c + 1}",
                fill="black",
                font=tick_font,
                anchor="ma",
            )

    bar_x = left + grid_w + bar_gap
    ramp = _cell_colors(np.linspace(hi, lo, grid_h)[:, None], lo, hi)
    canvas.paste(Image.fromarray(ramp, "RGB").resize((bar_w, grid_h), Image.Resampling.NEAREST), (bar_x, top))
    for tick in MaxNLocator(nbins=6).tick_values(lo, hi):
        if lo - 1e-9 <= tick <= hi + 1e-9:
            ty = top + (hi - tick) / (hi - lo) * (grid_h - 1)
            draw.line([(bar_x + bar_w, ty), (bar_x + bar_w + 4, ty)], fill="black")
            draw.text((bar_x + bar_w + 7, ty), f"{tick:.2f}", fill="black", font=tick_font, anchor="lm")
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
