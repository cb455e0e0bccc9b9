"""Labelled colour patches for the fine-tuning tests: real RGB images a tiny random model cannot name but whose
features separate linearly, written as class folders or a zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("red", "green", "blue")
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 60, 220))


def colour_images(per_class: int, *, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """Noisy colour patches with class-specific stripes: real RGB images the tiny random model cannot name
    (zero-shot is at chance) but whose features separate linearly."""
    rng = np.random.default_rng(seed)
    items = []
    for c, name in enumerate(CLASSES):
        for _ in range(per_class):
            pixels = np.asarray(COLOURS[c], float) + rng.normal(0, 30, (32, 32, 3))
            if c == 0:
                pixels[::4] = 255
            elif c == 1:
                pixels[:, ::4] = 0
            items.append((Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), name))
    return items


def write_folder(root: Path, items) -> Path:
    for i, (image, name) in enumerate(items):
        (root / name).mkdir(parents=True, exist_ok=True)
        image.save(root / name / f"{i:03d}.png")
    return root


def write_zip(path: Path, items, *, top: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, name) in enumerate(items):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(f"{top}{name}/{i:03d}.png", buffer.getvalue())
    return path
