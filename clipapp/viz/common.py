"""What both heatmap renderers share (matplotlib's for files and the CLI, Pillow's for the page), so the two draw the
same figure: the input checks, the colour map and range, the ink rule, label shortening, clamping and thumbnails."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from clipapp.errors import ClipAppError

HEATMAP_CMAP = "viridis"
HEATMAP_TITLE = "Cosine similarity between text and image features"
LABEL_CHARS = 48  # a text row's label is cut to this many characters
THUMB_PX = 160  # thumbnails are resampled once to this square size; the figure scales them further
ELLIPSIS = "\u2026"


def clip(x: float, lo: float, hi: float) -> float:
    """`x` clamped to [lo, hi], as a float (sizes laid out from the counts)."""
    return float(min(hi, max(lo, x)))


def shorten(text: object, max_chars: int) -> str:
    """One line, at most `max_chars` characters, an ellipsis where it was cut."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    if len(s) <= max_chars:
        return s
    return s[: max(1, max_chars - 1)].rstrip() + ELLIPSIS


def heatmap_grid(
    matrix: np.ndarray, images: Sequence[object] | None, texts: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """The checked (n_images, n_texts) `matrix` transposed (rows = texts, columns = images), and the texts as str."""
    m = np.asarray(matrix, dtype=np.float64)
    texts = [str(t) for t in texts]
    n_img_given = None if images is None else len(images)
    if m.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (n_images, n_texts), got shape {m.shape}")
    n_img, n_txt = m.shape
    if (n_img_given is not None and n_img_given != n_img) or len(texts) != n_txt:
        raise ValueError(
            f"similarity matrix has shape {m.shape} = (n_images, n_texts) but "
            f"{n_img_given if n_img_given is not None else 'no'} images and {len(texts)} texts were given"
        )
    if n_img == 0 or n_txt == 0:
        raise ClipAppError("Give at least one image and one text to compare.")
    if not np.all(np.isfinite(m)):
        raise ValueError("similarity matrix contains NaN or infinite values")
    return m.T, texts


def color_range(grid: np.ndarray) -> tuple[float, float]:
    """The colour scale's (low, high): the values' range, widened to 0.1 when they are all (nearly) equal."""
    lo, hi = float(grid.min()), float(grid.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    return lo, hi


def dark_ink_on(rgb: Sequence[float] | np.ndarray) -> bool:
    """Whether black text reads better than white on the colour `rgb` (0..1; alpha ignored)."""
    r, g, b = (float(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45


def _to_rgba_array(img: object) -> np.ndarray:
    """Any PIL image (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F...) or HxW[xC] array -> uint8 RGBA array."""
    if isinstance(img, np.ndarray):
        arr = img
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            if arr.size and np.nanmax(arr) <= 1.0 and np.nanmin(arr) >= 0.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(arr)
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image or numpy array, got {type(img).__name__}")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High bit depth: stretch to 0..255 (a plain convert("L") clips everything above 255 to white).
        a = np.asarray(img, dtype=np.float64)
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.nan_to_num(a).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGBA"))


def thumbnail_rgba(img: object, size: int = THUMB_PX) -> np.ndarray:
    """The whole image fitted (aspect kept) in `size` x `size`, as RGBA: every side at least 1 pixel, however long
    and thin the image; small images (28 x 28 Fashion-MNIST) are enlarged without smoothing, so pixels stay sharp."""
    if (
        isinstance(img, Image.Image)
        and img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
        and max(img.size) > 4 * size
    ):
        img = img.copy()
        img.thumbnail((4 * size, 4 * size), Image.Resampling.BOX)  # cheap shrink before the RGBA copy of a photo
    rgba = Image.fromarray(_to_rgba_array(img), mode="RGBA")
    scale = size / max(rgba.size)
    target = (max(1, min(size, round(rgba.width * scale))), max(1, min(size, round(rgba.height * scale))))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(rgba.resize(target, method, reducing_gap=None if scale > 1 else 2.0))


def square_thumbnail(img: object, size: int = THUMB_PX, background=(255, 255, 255, 0)) -> np.ndarray:
    """The whole image fitted (aspect kept) and centred in a `size` x `size` RGBA square; transparent padding."""
    fitted = Image.fromarray(thumbnail_rgba(img, size), mode="RGBA")
    canvas = Image.new("RGBA", (size, size), background)
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return np.asarray(canvas)
