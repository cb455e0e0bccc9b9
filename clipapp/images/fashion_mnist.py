"""Fashion-MNIST, as installed by the Debian package `dataset-fashion-mnist`.

Used to train and evaluate the bundled demo model. The files are IDX, gzip-compressed:
images have a 16-byte header, labels an 8-byte header; 60,000 train and 10,000 test samples of 28x28 grayscale.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from clipapp.errors import ClipAppError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_OFFSET = 16
_LABEL_OFFSET = 8
_SIDE = 28


def _read_idx(path: Path, *, offset: int) -> np.ndarray:
    """Return the payload of one gzip IDX file as a flat uint8 array."""
    if not path.is_file():
        raise ClipAppError(
            f"Fashion-MNIST file not found: {path}. Install the data set with `apt-get install dataset-fashion-mnist`."
        )
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=offset)


def load_fashion_mnist(split: str = "test", *, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split ("train" or "test").

    Returns (images, labels): uint8 array of shape (N, 28, 28) and int64 array of shape (N,),
    labels indexing CLASS_NAMES.
    """
    if split not in _FILE_PREFIX:
        raise ClipAppError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or 'test'.")
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    prefix = _FILE_PREFIX[split]
    pixels = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", offset=_IMAGE_OFFSET)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", offset=_LABEL_OFFSET)
    images = pixels.reshape(-1, _SIDE, _SIDE)
    if images.shape[0] != labels.shape[0]:
        raise ClipAppError(
            f"Fashion-MNIST {split} files disagree: {images.shape[0]} images but {labels.shape[0]} labels."
        )
    return images.copy(), labels.astype(np.int64)


def to_pil_images(images: np.ndarray) -> list[Image.Image]:
    """Convert an array of grayscale images (N, H, W) uint8 to a list of PIL images in mode "L"."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    return [Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)) for a in arr]
