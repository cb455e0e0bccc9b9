"""The collection map (clipapp/index/layout.py) beside the obvious alternative, PCA, in one run.

quality: Fashion-MNIST test images embedded with the bundled demo model; for our layout (UMAP on a sample, the rest
placed by neighbours) and for PCA to 2D: sklearn's `trustworthiness` (k=10: are 2D neighbours true neighbours?)
and k-NN class agreement (share of each image's 10 nearest 2D neighbours with its class). Also "ours, all fitted"
(UMAP on every image) to show what the sample costs.
scale: time and peak RSS of `compute_layout` on N synthetic clustered unit vectors, generated chunk by chunk (the
vectors are never all in memory, as with an index), each size in a fresh process so ru_maxrss is its own; with
--index FOLDER, of `index_layout` on that index instead (as `clipapp map` computes it, the cache removed first).

    python bench/bench_map.py quality --n 3000
    python bench/bench_map.py scale --n 100000 --runs 3
    python bench/bench_map.py scale --index /tmp/bench_filters/1000000x512 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from clipapp.index.layout import array_chunks, compute_layout  # noqa: E402

DIM = 512
CENTRES = 50


def synthetic_chunks(n: int, dim: int = DIM, rows: int = 65536, seed: int = 0):
    """A repeatable pass over n clustered unit vectors, made chunk by chunk (memory: one chunk)."""
    centres = np.random.default_rng(seed).standard_normal((CENTRES, dim)).astype(np.float32)

    def passes():
        for i, lo in enumerate(range(0, n, rows)):
            rng = np.random.default_rng(seed + 1 + i)
            m = min(rows, n - lo)
            v = centres[rng.integers(0, CENTRES, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            yield v

    return passes


def knn_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean())


def quality(n: int) -> None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness

    from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images
    from clipapp.model.service import ClipService

    images, labels = load_fashion_mnist("test")
    service = ClipService.load("demo", device="cpu", allow_fallback=False)
    vectors = service.encode_images(to_pil_images(images[:n]), batch_size=256).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.asarray(labels[:n])
    rows = {}
    start = time.perf_counter()
    rows["PCA"] = (PCA(2, random_state=0).fit_transform(vectors), time.perf_counter() - start)
    start = time.perf_counter()
    rows["ours (sample 1000)"] = (
        compute_layout(array_chunks(vectors), n, vectors.shape[1], fit_sample=1000).xy,
        time.perf_counter() - start,
    )
    start = time.perf_counter()
    rows["ours (all fitted)"] = (
        compute_layout(array_chunks(vectors), n, vectors.shape[1], fit_sample=n).xy,
        time.perf_counter() - start,
    )
    print(f"Fashion-MNIST test, first {n} images, demo model ({vectors.shape[1]}-d)")
    print(f"{'method':<20} {'trustworthiness@10':>18} {'10-NN class agreement':>22} {'seconds':>8}")
    print(f"{'(the vectors)':<20} {'1.000':>18} {knn_agreement(vectors, labels):>22.3f}")
    for name, (xy, secs) in rows.items():
        print(
            f"{name:<20} {trustworthiness(vectors, xy, n_neighbors=10):>18.3f} "
            f"{knn_agreement(xy, labels):>22.3f} {secs:>8.1f}"
        )


def one_scale_run(n: int) -> None:
    start = time.perf_counter()
    layout = compute_layout(synthetic_chunks(n), n, DIM)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": n, "seconds": seconds, "peak_rss_mb": rss / 2**20, "method": layout.method}))


def one_index_run(folder: str) -> None:
    """The map of an existing index as `clipapp map` computes it (index_layout: the vectors read from the index's
    file in chunks, every path listed), the cache beside it removed first so it is computed."""
    from pathlib import Path

    from clipapp.index import ImageIndex
    from clipapp.index.layout import MAP_META, index_layout

    for old in Path(folder).glob("map-*.npz"):
        old.unlink()
    (Path(folder) / MAP_META).unlink(missing_ok=True)
    start = time.perf_counter()
    with ImageIndex.open(folder) as index:
        paths, layout = index_layout(index)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": len(paths), "seconds": seconds, "peak_rss_mb": rss / 2**20, "method": layout.method}))


def scale(n: int, runs: int, index: str | None = None) -> None:
    results = []
    for _ in range(runs):
        argv = ["_index", "--index", index] if index else ["_one", "--n", str(n)]
        out = (
            subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        results.append(json.loads(out))
        print(out, flush=True)
    secs = sorted(r["seconds"] for r in results)
    rss = sorted(r["peak_rss_mb"] for r in results)
    n = results[0]["n"]
    print(
        f"n={n}: seconds min/median/max {secs[0]:.1f}/{statistics.median(secs):.1f}/{secs[-1]:.1f}; "
        f"peak RSS MB min/median/max {rss[0]:.0f}/{statistics.median(rss):.0f}/{rss[-1]:.0f} "
        f"(the (n, {DIM}) vectors would be {n * DIM * 4 / 2**20:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "scale", "_one", "_index"))
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--index", help="scale: map this index folder (e.g. bench_filters.py's 1M one) instead")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.what == "quality":
        quality(args.n)
    elif args.what == "scale":
        scale(args.n, args.runs, args.index)
    elif args.what == "_index":
        one_index_run(args.index)
    else:
        one_scale_run(args.n)


if __name__ == "__main__":
    main()
