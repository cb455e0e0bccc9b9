"""The collection map's geometry: every image's 2D position and k-means cluster, computed from the stored vectors in
bounded memory and cached beside the index (a derived cache, like the faiss one: rebuilt when the index's commit
counter moved).

How, and why (figures in docs/benchmarks.md, bench/bench_map.py):
- UMAP (umap-learn, cosine) is fitted on a sample of at most `FIT_SAMPLE` vectors; every other image is placed at
  the similarity-weighted mean of its `PLACE_K` nearest sampled neighbours' positions (faiss inner product, in
  chunks). UMAP's own `transform` does the same first step and then optimises; the plain weighted mean keeps
  1M images at minutes on 2 cores with memory = the sample + one chunk, never the whole vector file.
- k-means (faiss.Kmeans) is trained on a sample too (faiss itself caps it at 256 points per centroid) and every
  vector is assigned to its nearest centroid in the same chunked pass.
Without umap-learn (an optional extra) the sample is placed by its top-2 principal components (measured worse at
keeping neighbours together: docs/benchmarks.md) and the result says so in `method`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np

from clipapp.errors import ClipAppError
from clipapp.storage import atomic_path

FIT_SAMPLE = 5000  # UMAP on 5k x 512 takes ~15 s on this machine's 2 cores; the rest is placed by neighbours
PLACE_K = 10  # neighbours whose positions are averaged to place an image that was not in the fitted sample
CHUNK = 8192  # vectors per chunk of the placing pass (memory: CHUNK x dim floats)
MAX_CLUSTERS = 30  # more named clusters than this are not readable on one map
MAP_META = "map.json"

VectorChunks = Callable[[], Iterator[np.ndarray]]  # a fresh pass over all vectors (float32, L2-normalised)


@dataclass
class Layout:
    """Row i of `xy`/`cluster` is the i-th vector of the pass (for an index: the i-th id, as iter_vectors gives)."""

    xy: np.ndarray  # (n, 2) float32, scaled into [0, 1]
    cluster: np.ndarray  # (n,) int32, index into `centroids`
    centroids: np.ndarray  # (k, dim) float32, L2-normalised
    method: str  # "umap" or "pca"


def default_clusters(n: int) -> int:
    """k for n images: sqrt(n/2) (the common rule of thumb), at least 1, at most MAX_CLUSTERS."""
    return max(1, min(MAX_CLUSTERS, n, int(math.sqrt(n / 2))))


def _sample(chunks: VectorChunks, n: int, size: int, seed: int) -> np.ndarray:
    """`size` vectors drawn uniformly without replacement, in one pass; memory: the sample."""
    keep = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    out, start = [], 0
    for chunk in chunks():
        stop = start + len(chunk)
        lo, hi = np.searchsorted(keep, [start, stop])
        if hi > lo:
            out.append(chunk[keep[lo:hi] - start])
        start = stop
    if start != n:
        raise ClipAppError(
            f"The index changed while the map was computed ({start} vectors, expected {n}); run it again."
        )
    return np.ascontiguousarray(np.concatenate(out).astype(np.float32, copy=False))


def _embed_sample(sample: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    if len(sample) < 4:  # UMAP needs a few neighbours; a tiny collection is laid out on a line
        return np.column_stack([np.arange(len(sample)), np.zeros(len(sample))]).astype(np.float32), "pca"
    try:
        import umap
    except ImportError:
        centred = sample - sample.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return (centred @ vt[:2].T).astype(np.float32), "pca"
    neighbours = min(15, len(sample) - 1)
    reducer = umap.UMAP(
        n_neighbors=neighbours, metric="cosine", random_state=seed, init="random" if len(sample) < 16 else "spectral"
    )
    return np.asarray(reducer.fit_transform(sample), dtype=np.float32), "umap"


def _place(
    chunks: VectorChunks, sample: np.ndarray, sample_xy: np.ndarray, kmeans_index: faiss.Index, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every vector's position (weighted mean of its nearest sampled neighbours') and cluster, chunk by chunk."""
    near = faiss.IndexFlatIP(sample.shape[1])
    near.add(sample)
    k = min(PLACE_K, len(sample))
    xy = np.empty((n, 2), dtype=np.float32)
    cluster = np.empty(n, dtype=np.int32)
    start = 0
    for chunk in chunks():
        for lo in range(0, len(chunk), CHUNK):
            part = np.ascontiguousarray(chunk[lo : lo + CHUNK], dtype=np.float32)
            sims, idx = near.search(part, k)
            # sharp weights: the nearest neighbour dominates (an image that was in the sample lands on itself)
            weights = np.exp((sims - sims[:, :1]) * 50.0)
            weights /= weights.sum(axis=1, keepdims=True)
            xy[start : start + len(part)] = np.einsum("nk,nkd->nd", weights, sample_xy[idx])
            cluster[start : start + len(part)] = kmeans_index.search(part, 1)[1][:, 0]
            start += len(part)
    return xy, cluster


def compute_layout(
    chunks: VectorChunks, n: int, dim: int, *, clusters: int | None = None, seed: int = 0, fit_sample: int = FIT_SAMPLE
) -> Layout:
    """The map of `n` vectors given as a repeatable pass of chunks (three passes are made). Memory: the fitted
    sample, one chunk, and the (n, 2) result."""
    if n < 1:
        raise ClipAppError("The index is empty: index some images first, then draw its map.")
    sample = _sample(chunks, n, fit_sample, seed)
    k = default_clusters(n) if clusters is None else max(1, min(int(clusters), len(sample)))
    kmeans = faiss.Kmeans(dim, k, niter=20, seed=seed + 1, spherical=True, verbose=False)
    kmeans.train(sample)
    sample_xy, method = _embed_sample(sample, seed)
    xy, cluster = _place(chunks, sample, sample_xy, kmeans.index, n)
    low, high = xy.min(axis=0), xy.max(axis=0)
    xy = (xy - low) / np.where(high > low, high - low, 1.0)
    return Layout(xy.astype(np.float32), cluster, np.asarray(kmeans.centroids, dtype=np.float32), method)


def array_chunks(vectors: np.ndarray, rows: int = CHUNK) -> VectorChunks:
    """A VectorChunks over an in-memory array (tests, small indexes)."""

    def passes() -> Iterator[np.ndarray]:
        for lo in range(0, len(vectors), rows):
            yield vectors[lo : lo + rows]

    return passes


# -- the cache beside the index ---------------------------------------------------------------------------------
def _cache_name(generation: int, clusters: int | None) -> str:
    return f"map-{generation}-{'auto' if clusters is None else int(clusters)}.npz"


def load_layout(folder: str | os.PathLike, generation: int, clusters: int | None) -> Layout | None:
    """The cached map of this commit generation and cluster count, or None (missing, stale or unreadable)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / MAP_META).read_text(encoding="utf-8"))
        if meta.get("file") != _cache_name(generation, clusters):
            return None
        with np.load(folder / meta["file"]) as data:
            return Layout(data["xy"], data["cluster"], data["centroids"], str(meta["method"]))
    except (OSError, ValueError, KeyError):
        return None


def save_layout(folder: str | os.PathLike, generation: int, clusters: int | None, layout: Layout) -> None:
    """Write the map (atomically: a crash leaves the old cache or the new one) and drop older ones."""
    folder = Path(folder)
    name = _cache_name(generation, clusters)
    with atomic_path(folder / name) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, xy=layout.xy, cluster=layout.cluster, centroids=layout.centroids)
    with atomic_path(folder / MAP_META) as tmp:
        tmp.write_text(json.dumps({"file": name, "generation": generation, "method": layout.method}), encoding="utf-8")
    for entry in os.scandir(folder):
        if entry.name.startswith("map-") and entry.name.endswith(".npz") and entry.name != name:
            Path(entry.path).unlink(missing_ok=True)


def index_layout(index, *, clusters: int | None = None, progress=None) -> tuple[list[str], Layout]:
    """The map of an ImageIndex (its first path per image, in id order, and the layout), from the cache beside it
    when the index has not changed since it was computed, else computed and cached."""
    generation = index.generation
    paths = index.display_paths()
    layout = load_layout(index.path, generation, clusters) if index.path is not None else None
    if layout is None or len(layout.xy) != len(paths):
        if progress is not None:
            progress(0, 1, "computing the map")
        layout = compute_layout(_index_chunks(index), len(paths), index.dim, clusters=clusters)
        if index.path is not None:
            save_layout(index.path, generation, clusters, layout)
    if progress is not None:
        progress(1, 1, "map ready")
    return paths, layout


def _index_chunks(index) -> VectorChunks:
    def passes() -> Iterator[np.ndarray]:
        for _, vectors in index.iter_vectors():
            yield vectors

    return passes
