"""A stand-in for CLIP in the index tests (a fixed random projection of 8x8 pixels, so no model is needed and the
tests count exactly which files get encoded), and the vectors, file infos and images those tests build."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from clipapp.index import FileInfo

SPEC = "fake-model"
DIM = 16


class FakeEncoder:
    """Deterministic stand-in for ClipService: vectors are a fixed projection of 8x8 RGB pixels, normalized."""

    def __init__(self, spec: str = SPEC, dim: int = DIM):
        self.spec, self.embed_dim = spec, dim
        self.projection = np.random.default_rng(42).standard_normal((8 * 8 * 3, dim)).astype(np.float32)
        self.calls: Counter = Counter()
        self.encoded_paths: list[str] = []

    def _embed(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255.0 - 0.5
        vector = pixels @ self.projection
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def encode_image_files(self, paths, *, batch_size=32):
        self.calls["encode_image_files"] += 1
        for path in paths:
            self.encoded_paths.append(path)
            try:
                with Image.open(path) as image:
                    image.load()
                    vector = self._embed(image)
            except Exception as exc:  # noqa: BLE001 - the real service reports every decode failure the same way
                yield path, None, f"{os.path.basename(path)}: not an image file ({exc.__class__.__name__})"
                continue
            yield path, vector, None

    def encode_images(self, images):
        self.calls["encode_images"] += 1
        self.calls["images"] += len(images)
        return np.stack([self._embed(image) for image in images])

    def encode_texts(self, texts):
        self.calls["encode_texts"] += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.embed_dim)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32)

    def text_embeddings(self, labels, templates):
        self.calls["text_embeddings"] += 1
        rows = []
        for label in labels:
            mean = self.encode_texts([t.replace("{}", label) for t in templates]).mean(axis=0)
            rows.append(mean / np.linalg.norm(mean))
        return np.asarray(rows, dtype=np.float32)


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_unit(n: int, d: int, n_queries: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database, queries): unit vectors in three levels of clusters (20 themes > 1000 topics > bursts of ~4), a
    continuum of scales that makes IVF work for its recall (about 1 list in 9 probed at 100k x 64). Queries are
    fresh shots of existing bursts, not in the database."""
    rng = np.random.default_rng(seed)

    def around(centres: np.ndarray, count: int, spread: float) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), count)] + spread / np.sqrt(d) * rng.standard_normal((count, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    bursts = around(around(random_unit(20, d, seed + 1), 1000, 1.0), n // 4, 1.0)
    return around(bursts, n, 0.8), around(bursts, n_queries, 0.8)


def infos_for(ids) -> list[FileInfo]:
    return [FileInfo(path=f"/photos/{i:07d}.jpg", size=1000 + i, mtime=float(i), sha256=f"{i:064x}") for i in ids]


def write_image(path: Path, seed: int, *, size=(24, 24)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else Image.fromarray(
        pixels
    ).save(path)
    return path
