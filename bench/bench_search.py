"""Search benchmark: numpy brute force (normalized matrix @ query) vs clipapp's ImageIndex, side by side, one run.

    python bench/bench_search.py [--sizes 10k,100k,1M] [--dim 512] [--threads 2] [--json results.json]

Data: synthetic clustered unit vectors with a fixed seed, in three levels like a photo collection: 50 themes,
2000 topics, bursts of ~4 shots (nearest neighbour cosine ~0.63, 10th neighbour ~0.30, random pairs ~0).
Queries are fresh shots of existing bursts (not in the index). Both methods answer the same queries; recall@10 is
measured against the exact numpy answer. Latency is per call: single queries one at a time, and batches of 64.
Memory: RSS growth while building the index (raw vectors + faiss + path metadata) and the index's own estimate of
its vector bytes (raw copy + faiss structure).

Goal at 1M x 512 (issue "index"): single-query p50 <= 5 ms at recall@10 >= 0.95, >= 20x faster than numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from clipapp.index import FileInfo, ImageIndex  # noqa: E402

K = 10
BATCH = 64
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def clustered_dataset(n: int, d: int, n_queries: int, *, seed: int = 0, themes: int = 50, topics: int = 2000,
                      burst: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(database (n, d), queries (n_queries, d)): float32 unit rows in three levels of clusters, themes > topics >
    bursts of ~`burst` near-shots, like a photo collection. Queries are fresh shots of existing bursts.
    Generated in chunks of 100k rows to bound the temporaries."""
    rng = np.random.default_rng(seed)
    theme_centres = unit(rng.standard_normal((themes, d), dtype=np.float32))
    topic_centres = unit(theme_centres[rng.integers(0, themes, topics)]
                         + 0.8 / np.sqrt(d) * rng.standard_normal((topics, d), dtype=np.float32))
    n_bursts = max(1, n // burst)
    burst_centres = unit(topic_centres[rng.integers(0, topics, n_bursts)]
                         + 1.2 / np.sqrt(d) * rng.standard_normal((n_bursts, d), dtype=np.float32))

    def shots(count: int) -> np.ndarray:
        out = np.empty((count, d), dtype=np.float32)
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            noise = rng.standard_normal((stop - start, d), dtype=np.float32)
            noise *= 0.8 / np.sqrt(d)
            noise += burst_centres[rng.integers(0, n_bursts, stop - start)]
            out[start:stop] = unit(noise)
        return out

    return shots(n), shots(n_queries)


def numpy_single(database: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    scores = database @ query
    top = np.argpartition(scores, len(scores) - k)[-k:]
    return top[np.argsort(-scores[top])]


def numpy_batch(database: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    scores = queries @ database.T
    top = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def latencies(fn, inputs, *, warmup: int = 3) -> np.ndarray:
    for item in inputs[:warmup]:
        fn(item)
    times = []
    for item in inputs:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1000.0


def summarize(ms: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth)]))


def bench_size(label: str, n: int, d: int, *, seed: int) -> list[dict]:
    n_queries = 8 * BATCH  # 512 queries: recall@10 measured to about +-0.003
    database, queries = clustered_dataset(n, d, n_queries, seed=seed)
    batches = [queries[i:i + BATCH] for i in range(0, n_queries, BATCH)]
    # Brute force costs ~n*d per query; fewer timed calls at 1M keep the run short without changing p50.
    singles_numpy = queries[: (200 if n <= 100_000 else 60)]
    singles_index = queries[:500]

    truth = np.concatenate([numpy_batch(database, b) for b in batches])
    numpy_single_ms = latencies(lambda q: numpy_single(database, q), singles_numpy)
    numpy_batch_ms = latencies(lambda b: numpy_batch(database, b), batches if n <= 100_000 else batches[:3], warmup=1)
    rows = [{"size": label, "method": "numpy brute force", "build_s": 0.0,
             "single": summarize(numpy_single_ms), "batch64": summarize(numpy_batch_ms), "recall@10": 1.0,
             "rss_delta_mb": database.nbytes / 2**20, "index_mb": database.nbytes / 2**20}]

    rss_before = rss_bytes()
    started = time.perf_counter()
    index = ImageIndex.in_memory("bench", d)
    infos = [FileInfo(path=f"/photos/{i:07d}.jpg", size=0, mtime=0.0, sha256=f"{i:064x}") for i in range(n)]
    index.add_items(database, infos)
    del infos
    added = time.perf_counter()
    index.ensure_built()
    built = time.perf_counter()
    rss_after = rss_bytes()

    found = [[hit["id"] for hit in hits] for b in batches for hits in index.search(b, k=K)]
    index_single_ms = latencies(lambda q: index.search(q, k=K), singles_index)
    index_batch_ms = latencies(lambda b: index.search(b, k=K), batches * 3, warmup=1)
    s = index.structure
    kind = "exact flat" if s.kind == "flat" else f"IVF nlist={s.nlist} nprobe={s.nprobe}"
    rows.append({"size": label, "method": f"ImageIndex ({kind})", "build_s": built - started,
                 "build_detail": {"add_s": added - started, "faiss_s": built - added},
                 "single": summarize(index_single_ms), "batch64": summarize(index_batch_ms),
                 "recall@10": recall_at_k(found, truth), "calibrated_recall": s.measured_recall,
                 "rss_delta_mb": (rss_after - rss_before) / 2**20,
                 "index_mb": sum(index.memory_bytes().values()) / 2**20})
    rows[-1]["speedup_single"] = rows[0]["single"]["p50_ms"] / rows[-1]["single"]["p50_ms"]
    rows[-1]["speedup_batch64"] = rows[0]["batch64"]["p50_ms"] / rows[-1]["batch64"]["p50_ms"]
    return rows


def print_table(rows: list[dict]) -> None:
    print("| size | method | build s | single p50 / p99 ms | batch64 p50 / p99 ms | recall@10 | RSS delta / index MB "
          "| speedup single / batch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = (f"{r['speedup_single']:.0f}x / {r['speedup_batch64']:.1f}x" if "speedup_single" in r else "1x")
        print(f"| {r['size']} | {r['method']} | {r['build_s']:.1f} | {r['single']['p50_ms']:.2f} / "
              f"{r['single']['p99_ms']:.2f} | {r['batch64']['p50_ms']:.1f} / {r['batch64']['p99_ms']:.1f} | "
              f"{r['recall@10']:.3f} | {r['rss_delta_mb']:.0f} / {r['index_mb']:.0f} | {speed} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated subset of 10k,100k,1M")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, faiss threads {args.threads}, "
          f"d={args.dim}, k={K}", flush=True)
    rows = []
    for label in sizes:
        size_rows = bench_size(label, SIZES[label], args.dim, seed=args.seed)
        rows.extend(size_rows)
        print_table(size_rows)
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
