"""Write the example images under assets/examples/ (run from the repo root: `python scripts/make_examples.py`).

- photos/: the CLIP-notebook photos that ship inside scikit-image's wheel (no download), JPEG q85, <= 384 px.
- fashion/: the first Fashion-MNIST test image of each class, 112x112 nearest-neighbour PNG, read straight from
  the IDX files of the Debian package dataset-fashion-mnist.
- ../finetune-example/<class>/: the Fine-tune tab's one-click labelled set, FINETUNE_PER_CLASS Fashion-MNIST test
  images of each of FINETUNE_CLASSES (the next ones after fashion/'s, same size); outside examples/ so the Search
  tab's "examples" index keeps its 18 images.

Deterministic: running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "assets" / "examples"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot"]  # file names, in label order (T-shirt/top, ..., Ankle boot)
# Four classes fill the Fine-tune tab's four class rows; the upper-body garments are the ones zero-shot confuses.
FINETUNE_CLASSES = ["t-shirt", "pullover", "coat", "shirt"]
FINETUNE_PER_CLASS = 8
MAX_SIDE = 384
JPEG_QUALITY = 85
FASHION_SIZE = 112

# output name -> (skimage.data function, the file it reads from the wheel's skimage/data folder).
# Only these bundled files are used: an image missing from the installed wheel is skipped, never downloaded.
PHOTOS = {
    "astronaut": ("astronaut", "astronaut.png"),
    "cat": ("chelsea", "chelsea.png"),
    "coffee": ("coffee", "coffee.png"),
    "rocket": ("rocket", "rocket.jpg"),
    "motorcycle": ("stereo_motorcycle", "motorcycle_left.png"),
    "horse": ("horse", "horse.png"),
    "camera": ("camera", "camera.png"),
    "page": ("page", "page.png"),
}


def _skimage_array(func_name: str, bundled_file: str) -> np.ndarray | None:
    """The image as an array, or None where its file is not inside the installed wheel."""
    from skimage import data

    loader = getattr(data, func_name, None)
    if loader is None or not (Path(data.__file__).parent / bundled_file).is_file():
        return None
    try:
        out = loader()
    except Exception as exc:  # noqa: BLE001 - e.g. a hash mismatch that would trigger a download
        print(f"skip {func_name}: {exc}", file=sys.stderr)
        return None
    if isinstance(out, tuple):  # stereo_motorcycle -> (left, right, disparity): keep the left view
        out = out[0]
    return np.asarray(out)


def _to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype == bool:  # horse: binary silhouette, True = background -> black horse on white
        arr = np.where(arr, 255, 0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    return img.convert("RGB") if img.mode not in ("L", "RGB") else img


def write_photos(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (func, bundled) in PHOTOS.items():
        arr = _skimage_array(func, bundled)
        if arr is None:
            print(f"skip {name}: skimage.data.{func} is not in the installed wheel")
            continue
        img = _to_image(arr)
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        path = out_dir / f"{name}.jpg"
        img.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=False)
        written.append(path)
    return written


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def read_fashion_test(src: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (10000, 28, 28), labels) of the Fashion-MNIST test set, or None when the package is missing."""
    images_gz, labels_gz = src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz"
    if not images_gz.exists() or not labels_gz.exists():
        print(f"skip fashion: {src} not found (apt-get install dataset-fashion-mnist)")
        return None
    labels = read_idx(labels_gz, 8)
    images = read_idx(images_gz, 16).reshape(-1, 28, 28)
    assert len(images) == len(labels) == 10_000, (len(images), len(labels))
    return images, labels


def _save_fashion(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image, mode="L").resize((FASHION_SIZE, FASHION_SIZE), Image.Resampling.NEAREST)
    img.save(path, format="PNG", optimize=True)
    return path


def write_fashion(out_dir: Path, src: Path = FASHION_DIR) -> list[Path]:
    data = read_fashion_test(src)
    if data is None:
        return []
    images, labels = data
    return [
        _save_fashion(images[int(np.flatnonzero(labels == cls)[0])], out_dir / f"{name}.png")
        for cls, name in enumerate(FASHION_CLASSES)
    ]


def write_finetune_example(out_dir: Path, src: Path = FASHION_DIR) -> list[Path]:
    data = read_fashion_test(src)
    if data is None:
        return []
    images, labels = data
    written = []
    for name in FINETUNE_CLASSES:
        indices = np.flatnonzero(labels == FASHION_CLASSES.index(name))[1 : 1 + FINETUNE_PER_CLASS]
        written += [_save_fashion(images[i], out_dir / name / f"{i:05d}.png") for i in indices]
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    paths = write_photos(args.out / "photos") + write_fashion(args.out / "fashion")
    paths += write_finetune_example(args.out.parent / "finetune-example")
    total = 0
    for p in paths:
        size = p.stat().st_size
        total += size
        print(f"{p.relative_to(args.out.parent)}\t{size / 1024:.1f} KB")
    print(f"{len(paths)} files, {total / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
