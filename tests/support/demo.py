"""The bundled demo model (clipapp/assets/demo) as a service, and real images of its labels and of other things,
for tests that need a model that has learnt something (the tiny test model is random)."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images


@cache
def demo_service():
    from clipapp.model.service import ClipService

    return ClipService.load("demo", device="cpu", precision="fp32")


def fashion_images(n: int, *, split: str = "test") -> tuple[list[Image.Image], np.ndarray]:
    """The first n images of a Fashion-MNIST split and their class indices."""
    images, labels = load_fashion_mnist(split)
    return to_pil_images(images[:n]), labels[:n]


def digit_images(n: int) -> list[Image.Image]:
    """scikit-learn's 8x8 handwritten digits, scaled to Fashion-MNIST's 28x28 grey: images of none of its labels."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]
    return [Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR) for d in digits]
