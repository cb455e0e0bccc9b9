"""What an image may be (pixels, aspect ratio), the one source of these limits.

Kept apart from the decoder (clipapp/images/decode.py) because every command's parser shows `--max-pixels`'s default:
this module imports nothing heavy, so `clipapp --help` does not pay for numpy, Pillow and pillow-heif (~0.4 s measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from clipapp.errors import ClipAppError

# 40 megapixels covers any camera; beyond it a file is a decompression bomb or a mistake.
MAX_IMAGE_PIXELS = 40_000_000
# A model's preprocessing scales the shorter side to its input size first, so a 1 x 20000 image became 224 x 4.5
# million pixels (6.1 GB of RSS on ViT-B-32). These two bound what any image can make it allocate: the longer side
# at most 20x the shorter (panoramas are up to ~10:1), and at most 8 M pixels after that resize (~100 MB as floats).
MAX_ASPECT_RATIO = 20.0
MAX_RESIZED_PIXELS = 8_000_000


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be, checked from its header before any pixel is decoded
    (`clipapp.images.decode.check_image_shape`). The service holds one (`ClipService(limits=...)`), the app's and
    the CLI's `--max-pixels` set it."""

    max_pixels: int = MAX_IMAGE_PIXELS
    max_aspect: float = MAX_ASPECT_RATIO
    max_resized_pixels: int = MAX_RESIZED_PIXELS

    def __post_init__(self):
        if int(self.max_pixels) < 1 or float(self.max_aspect) < 1 or int(self.max_resized_pixels) < 1:
            raise ClipAppError(f"Image limits must be positive (and the aspect ratio at least 1): {self}.")


DEFAULT_LIMITS = ImageLimits()
