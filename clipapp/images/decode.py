"""Safe image decoding: the one place that turns bytes or files into RGB images (limits, EXIF orientation, HEIC,
camera RAW), and the file extensions it reads. Which files of a folder are images: clipapp.images.folders."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from clipapp.errors import ImageLoadError
from clipapp.images.limits import (  # noqa: F401 - re-exported: the decoder applies them
    DEFAULT_LIMITS,
    MAX_ASPECT_RATIO,
    MAX_IMAGE_PIXELS,
    MAX_RESIZED_PIXELS,
    ImageLimits,
)

# Camera RAW files, decoded by LibRaw (rawpy); some are TIFF inside, so they are told apart by extension.
RAW_EXTENSIONS = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".rwl",
        ".pef",
        ".srw",
        ".3fr",
        ".erf",
        ".kdc",
        ".dcr",
        ".mrw",
        ".x3f",
        ".iiq",
    }
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} | HEIF_EXTENSIONS | RAW_EXTENSIONS
)
BACKGROUND = (255, 255, 255)

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

# HEIC/HEIF (phone photos) through Pillow's own Image.open, registered once for every reader in the app.
register_heif_opener()


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or os.fspath(source)
    return getattr(source, "name", None) or "uploaded image"


def check_image_shape(
    name: str, width: int, height: int, *, limits: ImageLimits = DEFAULT_LIMITS, resize_side: Optional[int] = None
) -> None:
    """Refuse, from the header alone, an image whose shape would make decoding or a model's preprocessing allocate
    without bound: too many pixels, too long and thin, or too many pixels once its shorter side is scaled to
    `resize_side` (the model's input size). The one place these limits are applied."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name}: the image has no pixels.")
    max_pixels, max_aspect, max_resized = limits.max_pixels, limits.max_aspect, limits.max_resized_pixels
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the limit of "
            f"{max_pixels / 1e6:.0f} MP (a decompression bomb or an oversized image)."
        )
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect:
        raise ImageLoadError(
            f"{name}: {width}x{height} pixels is {ratio:.0f}:1; images more than {max_aspect:.0f} times longer "
            f"than wide are refused (aspect-ratio limit {max_aspect:.0f}:1). Crop it first."
        )
    if resize_side and resize_side * resize_side * ratio > max_resized:
        raise ImageLoadError(
            f"{name}: {width}x{height} pixels would be {resize_side * resize_side * ratio / 1e6:.1f} MP once scaled "
            f"to this model's input side of {resize_side}; the limit is {max_resized / 1e6:.0f} MP after "
            "that resize. Crop it to a less elongated shape."
        )


def load_image(
    source: ImageSource,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    min_side: Optional[int] = None,
    resize_side: Optional[int] = None,
) -> Image.Image:
    """Decode a path, bytes, file object or PIL image into an upright 8-bit RGB image.

    Formats: whatever Pillow reads, HEIC/HEIF (pillow-heif) and camera RAW files by extension (`open_raw`).

    Every failure is an `ImageLoadError` naming the file: not an image, empty, truncated, or too many pixels
    (checked from the header, before any pixel is decoded). Odd but valid images are normalised: EXIF rotation
    applied, transparency composited on white, 16-bit and float images rescaled, CMYK and palettes converted.

    `min_side`: the caller only needs the shorter side this long (a model's input size, with margin), so a JPEG
    much larger than that is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (`Image.draft`), the smallest that keeps
    the shorter side >= `min_side`: a 12-megapixel photo decodes about 5x faster, and the later antialiased resize
    has far fewer pixels to read. Only scales that divide both sides exactly: otherwise libjpeg rounds the size up
    and the picture shifts by part of a pixel (camera sizes are multiples of 8 or 16).

    `resize_side`: the side the caller's model scales the shorter side to; see `check_image_shape`.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        try:
            if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
                raise ImageLoadError(f"{name}: the file is empty.")
            with warnings.catch_warnings():
                # We enforce our own pixel limit below; Pillow's warning would only be noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if _is_raw(source):
                    image = open_raw(source, name, limits=limits, min_side=min_side)
                else:
                    image = Image.open(source)
        except ImageLoadError:
            raise
        except FileNotFoundError as exc:
            raise ImageLoadError(f"{name}: no such file.") from exc
        except IsADirectoryError as exc:
            raise ImageLoadError(f"{name}: is a folder, not an image file.") from exc
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"{name}: not an image file (or a format Pillow cannot read).") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageLoadError(f"{name}: could not be read as an image ({exc}).") from exc
    width, height = image.size
    check_image_shape(name, width, height, limits=limits, resize_side=resize_side)
    try:
        if min_side and getattr(image, "format", None) == "JPEG":
            factor = next(
                (f for f in (8, 4, 2) if width % f == 0 and height % f == 0 and min(width, height) // f >= min_side), 1
            )
            if factor > 1:
                image.draft(image.mode, (width // factor, height // factor))
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{name}: the file is truncated or corrupt ({exc}).") from exc


def _is_raw(source) -> bool:
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    return isinstance(name, str) and Path(name).suffix.lower() in RAW_EXTENSIONS


# LibRaw's `flip` -> the rotation that makes its embedded preview upright (postprocess applies it by itself).
_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def open_raw(source, name: str, *, limits: ImageLimits = DEFAULT_LIMITS, min_side: Optional[int]) -> Image.Image:
    """A camera RAW file as a PIL image: its embedded preview when that is large enough (`min_side`, or half the
    sensor's shorter side for a full decode), which is what the camera showed and needs no demosaic, else LibRaw's
    demosaic (camera white balance, sRGB, 8 bits; at half size when that still covers `min_side`)."""
    import rawpy

    try:
        with rawpy.imread(os.fspath(source) if isinstance(source, os.PathLike) else source) as raw:
            sizes = raw.sizes
            check_image_shape(name, sizes.width, sizes.height, limits=limits)  # before any demosaic
            need = min_side or min(sizes.width, sizes.height) // 2
            preview = _raw_preview(raw)
            if preview is not None and min(preview.size) >= need:
                orientation = preview.getexif().get(0x0112, 1) if preview.format == "JPEG" else 1
                if orientation == 1 and sizes.flip in _RAW_FLIP:  # a preview with no orientation of its own
                    preview.load()
                    preview = preview.transpose(_RAW_FLIP[sizes.flip])
                return preview
            half = min_side is not None and 0 < min_side <= min(sizes.width, sizes.height) // 2
            rgb = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8)
            return Image.fromarray(rgb)
    except rawpy.LibRawError as exc:
        raise ImageLoadError(f"{name}: could not be read as a camera RAW file ({type(exc).__name__}: {exc}).") from exc


def _raw_preview(raw) -> Optional[Image.Image]:
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            return Image.open(io.BytesIO(thumb.data))
        except (UnidentifiedImageError, OSError):
            return None
    return Image.fromarray(thumb.data)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the usual surprises (black transparency, clipped 16-bit)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's convert("L") clips these to 0..255 instead of rescaling; rescale to the image's range.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((array - low) * scale).round().astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
