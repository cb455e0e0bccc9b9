"""Archive benchmark (issue 22): compaction, backup, export/import at archive scale, with a streamed exact answer.

    flock /tmp/bench.lock python bench/bench_archive.py --n 1M [--dim 512] [--runs 3] [--work DIR]
    flock /tmp/bench.lock python bench/bench_archive.py --n 1M --quantizers   # IVF flat vs HNSW coarse quantizer
    flock /tmp/bench.lock python bench/bench_archive.py --n 10M --search-only --also 1M --max-index-memory 1GB  # 10M

Nothing here holds all vectors in RAM: the synthetic clustered vectors (bench_search.clustered_dataset's three
levels, generated in chunks) are written straight into an index folder in batches of 100k with a commit each, as a
sync does; the exact ground truth is a streamed top-k over vectors.f32 (`streamed_top_k`: one chunk of rows at a
time, a running (queries x k) best list), so 10M x 512 (20 GB of vectors) needs ~chunk x d x 4 bytes, not 20 GB.

Per run, on a fresh copy of the built index (each operation beside its competitor, in the same run):
* compaction after removing 30% of the images (random): time, vectors.f32 and folder bytes before/after; beside
  rebuilding the folder from scratch (re-adding the live vectors: what you would do without compaction);
* backup (`backup_index`) beside a plain `shutil.copytree` of the folder (fast but not consistent under writes);
* export (`export_index`, npy and parquet) beside `np.save` of the same vectors read from the store;
  import (`import_embeddings` into a new index) beside `add_items` of the same vectors from RAM in 100k batches.
* `--search-only`: build the search structure, then p50/p99 of single queries and recall@10 against the streamed
  exact answer, and the RSS of this process (what 10M needs).

Times are wall seconds on whatever machine runs it; report min/median/max of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss
import numpy as np

from bench.bench_search import clustered_dataset, rss_bytes, unit
from clipapp.index import FileInfo, ImageIndex, backup_index, export_index, import_embeddings
from clipapp.index.structure import parse_memory_size

SIZES = {"100k": 100_000, "300k": 300_000, "1M": 1_000_000, "3M": 3_000_000, "10M": 10_000_000}
K = 10
CHUNK = 100_000
TRUTH_CHUNK = 262_144  # rows per read of the streamed exact search: 512 MB at d=512


def streamed_top_k(vector_file: Path, dim: int, queries: np.ndarray, k: int = K, live=None) -> np.ndarray:
    """Exact top-k ids (rows of `vector_file`) per query, reading the file one chunk at a time. `live(start, stop)`
    -> bool mask of rows that count (dead rows of removed images do not). Memory: one chunk + (q, k)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    rows = os.path.getsize(vector_file) // (4 * dim)
    with open(vector_file, "rb") as handle:
        for start in range(0, rows, TRUTH_CHUNK):
            stop = min(rows, start + TRUTH_CHUNK)
            chunk = np.fromfile(handle, dtype="<f4", count=(stop - start) * dim).reshape(-1, dim)
            scores = queries @ chunk.T
            if live is not None:
                scores[:, ~live(start, stop)] = -np.inf
            top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
            merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
            merged_ids = np.concatenate([best_ids, top + start], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids


def infos(start: int, stop: int) -> list[FileInfo]:
    return [FileInfo(f"/photos/{i:08d}.jpg", 1000, 0.0, f"{i:064x}") for i in range(start, stop)]


def build(
    folder: Path, n: int, d: int, *, seed: int, max_nlist: int | None, max_memory: str | None = None
) -> np.ndarray:
    """Stream n clustered vectors into a new index (100k per commit); returns 200 held-out queries."""
    settings: dict = {} if max_nlist is None else {"max_nlist": max_nlist}
    if max_memory:
        settings["max_memory"] = parse_memory_size(max_memory)
    index = ImageIndex.create(folder, "bench", d, **settings)
    queries = None
    for start in range(0, n, 1_000_000):  # the generator holds <= 1M rows (2 GB at d=512) at a time
        stop = min(n, start + 1_000_000)
        vectors, fresh = clustered_dataset(stop - start, d, 200, seed=seed + start)
        queries = fresh if queries is None else queries
        for sub in range(0, stop - start, CHUNK):
            index.add_items(vectors[sub : sub + CHUNK], infos(start + sub, min(stop, start + sub + CHUNK)))
            index.save()
        del vectors
    index.close()
    assert queries is not None
    return unit(queries.copy())


def disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def one_run(base: Path, work: Path, n: int, d: int, run: int) -> dict:
    row: dict = {"run": run}
    folder = work / "idx"
    shutil.copytree(base, folder)
    index = ImageIndex.open(folder)
    removed = np.random.default_rng(run).choice(n, size=int(0.3 * n), replace=False)
    index.remove_paths([f"/photos/{i:08d}.jpg" for i in removed.tolist()])
    index.save()
    row["vectors_before_mb"] = (folder / "vectors.f32").stat().st_size / 2**20
    row["disk_before_mb"] = disk(folder) / 2**20
    report = index.compact()
    row["compact_s"] = report.seconds
    row["vectors_after_mb"] = (folder / "vectors.f32").stat().st_size / 2**20
    row["disk_after_mb"] = disk(folder) / 2**20

    def rebuild() -> None:  # the competitor: a new folder from the live vectors
        fresh = ImageIndex.create(work / "rebuilt", "bench", d)
        for paths, vectors in index.iter_vectors(CHUNK):
            fresh.add_items(vectors, [FileInfo(p, 1000, 0.0, p.rjust(64, "0")[-64:]) for p in paths])
            fresh.save()
        fresh.close()

    row["rebuild_s"] = timed(rebuild)
    index.close()
    row["backup_s"] = timed(lambda: backup_index(folder, work / "backup"))
    row["copytree_s"] = timed(lambda: shutil.copytree(folder, work / "plain"))
    row["export_npy_s"] = timed(lambda: export_index(folder, work / "npy", "npy"))
    row["export_parquet_s"] = timed(lambda: export_index(folder, work / "pq", "parquet"))

    def numpy_save() -> None:
        with ImageIndex.open(folder) as source:
            np.save(work / "vectors.npy", source.vectors())

    row["np_save_s"] = timed(numpy_save)
    target = ImageIndex.create(work / "imported", "bench", d)
    row["import_s"] = timed(lambda: import_embeddings(target, work / "pq"))
    target.close()
    vectors = np.load(work / "vectors.npy", mmap_mode="r")

    def add_from_ram() -> None:
        plain = ImageIndex.create(work / "from_ram", "bench", d)
        for start in range(0, len(vectors), CHUNK):
            plain.add_items(np.asarray(vectors[start : start + CHUNK]), infos(start, min(len(vectors), start + CHUNK)))
            plain.save()
        plain.close()

    row["add_from_ram_s"] = timed(add_from_ram)
    return row


def search_only(folder: Path, queries: np.ndarray, d: int, work: Path, runs: int) -> dict:
    """Structure build in this process; then, per run, a fresh process (bench_search's --probe, the app's view):
    open + first search, RSS holding it, p50/p99 of single queries, recall@10 against the streamed exact answer,
    add 10 + commit."""
    started = time.perf_counter()
    truth = streamed_top_k(folder / "vectors.f32", d, queries)
    truth_s = time.perf_counter() - started
    index = ImageIndex.open(folder)
    started = time.perf_counter()
    index.ensure_built()
    index.save()  # writes the faiss cache the probes open
    structure_s = time.perf_counter() - started
    structure = str(index.structure)
    index.close()
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    probes = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("bench_search.py")), "--probe", "ours", str(folder)]
            + [str(work / "queries.npy"), str(work / "truth.npy"), str(work)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        probes.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(probes[-1]), flush=True)
    return {
        "truth_s": truth_s,
        "structure_s": structure_s,
        "structure": structure,
        "disk_mb": disk(folder) / 2**20,
        "probes": probes,
    }


def numpy_sample(folder: Path, queries: np.ndarray, d: int, rows: int = 1_000_000) -> dict:
    """The competitor on a sample: brute force `matrix @ q` over the first `rows` vectors, loaded from the file."""
    rss0 = rss_bytes()
    started = time.perf_counter()
    matrix = np.fromfile(folder / "vectors.f32", dtype="<f4", count=rows * d).reshape(-1, d)
    load_s = time.perf_counter() - started
    ms = []
    for query in queries[:60]:
        started = time.perf_counter()
        np.argpartition(-(matrix @ query), K)[:K]
        ms.append(1000 * (time.perf_counter() - started))
    return {
        "rows": len(matrix),
        "load_s": load_s,
        "p50_ms": float(np.median(ms)),
        "rss_mb": (rss_bytes() - rss0) / 2**20,
    }


def quantizers(folder: Path, queries: np.ndarray, d: int, n: int) -> list[dict]:
    """IVF-PQ (d/4 bytes) with a flat coarse quantizer (nlist 1024, ours) vs an HNSW one (nlist 4096, autofaiss'
    choice at scale), trained on the same sample, each at the nprobe values listed; recall after our re-rank."""
    truth = streamed_top_k(folder / "vectors.f32", d, queries)
    source = ImageIndex.open(folder)
    sample = source._store.vectors_for(np.sort(np.random.default_rng(0).choice(n, 100_000, replace=False)))
    rows = []
    for name, nlist, quantizer in (
        ("flat-1024", 1024, faiss.IndexFlatIP(d)),
        ("hnsw32-4096", 4096, faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)),
    ):
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, d // 4, 8, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10
        started = time.perf_counter()
        ivf.train(sample)
        for start in range(0, n, CHUNK):
            ids = np.arange(start, min(n, start + CHUNK))
            ivf.add_with_ids(source._store.vectors_for(ids), ids)
        build_s = time.perf_counter() - started
        for nprobe in (16, 32, 64):
            ivf.nprobe = nprobe
            ms, recalls = [], []
            for query, exact in zip(queries, truth, strict=True):
                started = time.perf_counter()
                _, cand = ivf.search(query[None], 100)
                ids = np.sort(cand[0][cand[0] >= 0])
                top = ids[np.argsort(-(source._store.vectors_for(ids) @ query))[:K]]
                ms.append(1000 * (time.perf_counter() - started))
                recalls.append(len(set(top.tolist()) & set(exact.tolist())) / K)
            rows.append(
                {
                    "quantizer": name,
                    "build_s": build_s,
                    "nprobe": nprobe,
                    "p50_ms": float(np.median(ms)),
                    "recall@10": float(np.mean(recalls)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def print_search(result: dict) -> None:
    """One markdown row per size: bulk add and structure build once, the probes' min / median / max."""
    keys = ("open_s", "rss_mb", "add10_commit_s", "p50_ms", "p99_ms", "recall@10")
    print("\n| vectors | bulk add s | structure s | " + " | ".join(keys) + " | disk MB | structure |")
    print("|---" * (len(keys) + 5) + "|")
    for row in [result] + ([result["also"]] if "also" in result else []):
        cells = [spread([probe[key] for probe in row["probes"]]) for key in keys]
        print(
            f"| {row['n']:,} | {row['bulk_add_s']:.0f} | {row['structure_s']:.0f} | "
            + " | ".join(cells)
            + f" | {row['disk_mb']:,.0f} | {row['structure']} |"
        )
    numpy = result["numpy_sample"]
    print(
        f"numpy brute force over the first {numpy['rows']:,} vectors: load {numpy['load_s']:.1f} s, "
        f"p50 {numpy['p50_ms']:.0f} ms, +{numpy['rss_mb']:.0f} MB RSS"
    )


def spread(values: list[float]) -> str:
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", choices=list(SIZES), default="1M")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="folder for the indexes (default: a temporary one, removed)")
    parser.add_argument("--max-nlist", type=int, help="IVF lists at most (default: the index's size policy)")
    parser.add_argument("--max-index-memory", help="the index's memory budget, e.g. 1GB (PQ codes shrink to fit)")
    parser.add_argument("--also", choices=list(SIZES), help="--search-only: also build and probe this size, same run")
    parser.add_argument("--search-only", action="store_true", help="build + search figures, no archive operations")
    parser.add_argument("--quantizers", action="store_true", help="measure the coarse quantizer choice")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n, d = SIZES[args.n], args.dim
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    root = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=args.work))
    try:
        base = root / "base"
        started = time.perf_counter()
        queries = build(base, n, d, seed=args.seed, max_nlist=args.max_nlist, max_memory=args.max_index_memory)
        build_s = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"built {n} x {d} in {build_s:.1f}s, peak RSS {peak:.0f} MB", flush=True)
        if args.quantizers:
            result: object = quantizers(base, queries, d, n)
        elif args.search_only:
            result = {"n": n, "bulk_add_s": build_s, "peak_rss_mb": peak}
            result.update(search_only(base, queries, d, root, args.runs))
            result["numpy_sample"] = numpy_sample(base, queries, d, rows=min(n, 1_000_000))
            print(json.dumps(result), flush=True)
            if args.also:
                shutil.rmtree(base)  # disk for the second size
                small = root / "also"
                started = time.perf_counter()
                build(
                    small,
                    SIZES[args.also],
                    d,
                    seed=args.seed,
                    max_nlist=args.max_nlist,
                    max_memory=args.max_index_memory,
                )
                also = {"n": SIZES[args.also], "bulk_add_s": time.perf_counter() - started}
                result["also"] = {**also, **search_only(small, queries, d, root, args.runs)}
            print_search(result)
        else:
            rows = []
            for run in range(args.runs):
                work = root / f"run{run}"
                work.mkdir()
                rows.append(one_run(base, work, n, d, run))
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(work)
            result = rows
            print(f"\n{args.n} x {d}, {args.runs} runs, min / median / max seconds (shared 2-core machine: noisy)")
            for key in rows[0]:
                if key != "run":
                    print(f"  {key:18s} {spread([r[key] for r in rows])}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
