"""The app's operations as plain functions over a ClipService, returning JSON-ready dicts.

The CLI prints these dicts and the UI renders them, so both give the same answers by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from clipapp.data import ImageSource, load_image
from clipapp.errors import ClipAppError
from clipapp.prompts import DEFAULT_TEMPLATES, parse_labels
from clipapp.service import ClipService

MAX_IMAGES_PER_REQUEST = 64
MAX_TEXTS_PER_REQUEST = 200
DEFAULT_TOP_K = 5


@dataclass
class NamedImage:
    name: str
    image: Image.Image


def load_named_images(sources: Sequence[ImageSource], *, names: Optional[Sequence[str]] = None,
                      limit: int = MAX_IMAGES_PER_REQUEST) -> list[NamedImage]:
    """Decode every source, or fail on the first bad one with a message naming it."""
    if not sources:
        raise ClipAppError("No images given: upload or name at least one image.")
    if len(sources) > limit:
        raise ClipAppError(f"{len(sources)} images given; at most {limit} per request.")
    names = list(names) if names is not None else [str(getattr(s, "name", s)) if not isinstance(s, Image.Image)
                                                   else f"image {i + 1}" for i, s in enumerate(sources)]
    return [NamedImage(name, load_image(source)) for name, source in zip(names, sources)]


def classify(service: ClipService, images: Sequence[NamedImage], labels: str | Sequence[str], *,
             templates: str | Sequence[str] | None = DEFAULT_TEMPLATES, top_k: int = DEFAULT_TOP_K,
             classifier=None) -> dict:
    """Zero-shot (or adapted, when `classifier` is an adapter) top-k labels per image.

    Returns {"model", "results": [{"image", "top": [{"label", "prob"}]}]} as in design.md.
    """
    pil = [item.image for item in images]
    if classifier is not None:
        result = classifier.classify(service, pil)
        model = f"{service.spec} + adapter {classifier.name}"
    else:
        result = service.zero_shot(pil, parse_labels(labels), templates=templates)
        model = service.spec
    top_k = max(1, int(top_k))
    return {
        "model": model,
        "results": [
            {"image": item.name, "top": [{"label": label, "prob": prob} for label, prob in top]}
            for item, top in zip(images, result.top(top_k))
        ],
    }


def parse_texts(texts: str | Sequence[str], *, limit: int = MAX_TEXTS_PER_REQUEST) -> list[str]:
    """Texts for the similarity matrix: one per line (or a list); same validation as labels."""
    if isinstance(texts, str):
        texts = texts.splitlines()
    return parse_labels(list(texts), max_labels=limit)


def similarity(service: ClipService, images: Sequence[NamedImage], texts: str | Sequence[str]) -> dict:
    """Cosine similarity of each image to each text: {"model", "images", "texts", "matrix"}."""
    texts = parse_texts(texts)
    matrix = service.similarity([item.image for item in images], texts)
    return {
        "model": service.spec,
        "images": [item.name for item in images],
        "texts": texts,
        "matrix": np.round(matrix.astype(float), 6).tolist(),
    }
