"""Real Fashion-MNIST test images as a class-folder tree, for the classification and evaluation tests."""

from __future__ import annotations

from pathlib import Path

from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_pil_images

LABELS = [c.lower() for c in CLASS_NAMES]
N_IMAGES = 300


def class_folder_name(name: str) -> str:
    return name.lower().replace("/", " or ")


def write_fashion_folder(root: Path) -> Path:
    """The first N_IMAGES test images as PNG files, ROOT/<class>/<n>.png (nested: the walk is recursive)."""
    images, labels = load_fashion_mnist("test")
    for i, (image, label) in enumerate(zip(to_pil_images(images[:N_IMAGES]), labels[:N_IMAGES], strict=True)):
        folder = root / class_folder_name(CLASS_NAMES[label])
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i:05d}.png")
    return root
