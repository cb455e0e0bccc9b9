"""The map's geometry and its cache beside the index (clipapp/index/layout.py). Slow: UMAP's first call compiles
its numba kernels (~1 min on a loaded 2-core machine)."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.index import FileInfo, ImageIndex
from clipapp.index import layout as lay

pytestmark = pytest.mark.slow


def _blobs(n_per: int = 40, dim: int = 32, centres: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)) * 4
    labels = np.repeat(np.arange(centres), n_per)
    v = (c[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True), labels


def test_layout_keeps_groups_apart_and_clusters_find_them():
    vectors, labels = _blobs()
    layout = lay.compute_layout(lay.array_chunks(vectors, rows=17), len(vectors), vectors.shape[1], clusters=3)
    assert layout.xy.shape == (len(vectors), 2) and layout.xy.min() >= 0 and layout.xy.max() <= 1
    # each true group is one k-means cluster
    for g in range(3):
        assert len(set(layout.cluster[labels == g].tolist())) == 1
    # in 2D, an image's nearest neighbour is in its own group
    d = ((layout.xy[:, None] - layout.xy[None]) ** 2).sum(-1) + np.eye(len(vectors)) * 9
    assert (labels[d.argmin(1)] == labels).mean() > 0.95


def test_points_outside_the_fitted_sample_land_with_their_group():
    vectors, labels = _blobs(n_per=100)
    layout = lay.compute_layout(lay.array_chunks(vectors), len(vectors), vectors.shape[1], clusters=3, fit_sample=60)
    centres = np.stack([layout.xy[labels == g].mean(0) for g in range(3)])
    nearest_centre = ((layout.xy[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    assert (nearest_centre == labels).mean() > 0.95


def test_empty_index_is_a_user_error():
    with pytest.raises(ClipAppError, match="empty"):
        lay.compute_layout(lay.array_chunks(np.zeros((0, 4), np.float32)), 0, 4)


def _info(path: str, n: int) -> FileInfo:
    return FileInfo(path, n + 1, float(n), f"{n:064x}")


def test_cache_is_reused_until_the_index_changes(tmp_path, monkeypatch):
    vectors, _ = _blobs(n_per=10)
    index = ImageIndex.create(tmp_path / "idx", "spec", vectors.shape[1])
    index.add_items(vectors, [_info(f"/p/{i}.png", i) for i in range(len(vectors))])
    index.save()
    calls = []
    real = lay.compute_layout
    monkeypatch.setattr(lay, "compute_layout", lambda *a, **k: calls.append(1) or real(*a, **k))
    paths, first = lay.index_layout(index, clusters=2)
    assert paths == [f"/p/{i}.png" for i in range(len(vectors))] and len(calls) == 1
    reopened = ImageIndex.open(tmp_path / "idx")
    _, again = lay.index_layout(reopened, clusters=2)
    assert len(calls) == 1 and np.array_equal(first.xy, again.xy)  # from the file beside the index
    reopened.remove_paths(["/p/0.png"])
    reopened.save()
    paths, changed = lay.index_layout(reopened, clusters=2)
    assert len(calls) == 2 and len(changed.xy) == len(paths) == len(vectors) - 1
    assert len([p for p in (tmp_path / "idx").iterdir() if p.name.startswith("map-")]) == 1  # the old one went


def test_unreadable_cache_is_rebuilt(tmp_path):
    vectors, _ = _blobs(n_per=5)
    index = ImageIndex.create(tmp_path / "idx", "spec", vectors.shape[1])
    index.add_items(vectors, [_info(f"/p/{i}.png", i) for i in range(len(vectors))])
    index.save()
    lay.index_layout(index, clusters=2)
    (cached,) = [p for p in (tmp_path / "idx").iterdir() if p.name.startswith("map-")]
    cached.write_bytes(b"garbage")
    assert lay.load_layout(tmp_path / "idx", index.generation, 2) is None
    _, layout = lay.index_layout(index, clusters=2)
    assert len(layout.xy) == len(vectors)
