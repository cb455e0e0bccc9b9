"""The images of one request: decoded with the service's limits, named as the caller named them, and capped in
number (a larger job goes to the CLI, which streams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.images.decode import DEFAULT_LIMITS, ImageLimits, ImageSource, load_image

MAX_IMAGES_PER_REQUEST = 64
MAX_TEXTS_PER_REQUEST = 200


def too_many_images_message(count: int, limit: int = MAX_IMAGES_PER_REQUEST) -> str:
    """Why a request stops at `limit` images, and how to classify any number (the command line streams them)."""
    return (
        f"{count} images given; one request takes at most {limit}. To classify any number of images, put them "
        'in a folder and run: python -m clipapp classify FOLDER --labels "cat,dog,..." --csv predictions.csv '
        "(it streams the folder, writes a row per image as it goes, and --resume continues after a stop)."
    )


@dataclass
class NamedImage:
    name: str
    image: Image.Image


def load_named_images(
    sources: Sequence[ImageSource],
    *,
    names: Optional[Sequence[str]] = None,
    limit: int = MAX_IMAGES_PER_REQUEST,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[NamedImage]:
    """Decode every source, or fail on the first bad one with a message naming it (`limits`: the service's)."""
    if not sources:
        raise ClipAppError("No images given: upload or name at least one image.")
    if len(sources) > limit:
        raise ClipAppError(too_many_images_message(len(sources), limit))
    names = (
        list(names)
        if names is not None
        else [
            str(getattr(s, "name", s)) if not isinstance(s, Image.Image) else f"image {i + 1}"
            for i, s in enumerate(sources)
        ]
    )
    return [NamedImage(name, load_image(source, limits=limits)) for name, source in zip(names, sources, strict=True)]
