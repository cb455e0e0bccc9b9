"""Search benchmark: numpy brute force (normalized matrix @ query) vs clipapp's ImageIndex, side by side, one run.

    python bench/bench_search.py [--sizes 10k,100k,1M] [--dim 512] [--threads 2] [--json results.json]
    flock /tmp/bench.lock python bench/bench_search.py --archive 1M [--old] [--resync 100k] [--runs 3]

`--archive N`: the archive-scale figures of issue 10 on N clustered vectors written straight into an index
folder in bulk: open time (open + first search), RSS of a fresh process holding the opened index, add 10 images +
commit, single-query p50/p99 and recall@10 against exact search on held-out queries, bytes on disk, each measured
`--runs` times in fresh subprocesses; beside numpy brute force (np.load of the vectors + matrix @ query) and,
with `--old`, beside the index of commit 5332f97 (the generation/manifest format, imported from git).
`--resync N`: a full re-sync of an unchanged folder of N tiny image files (hashing skipped by size+mtime), ours
and the old code's, each in fresh processes.

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

import faiss
import numpy as np

from clipapp.index import FileInfo, ImageIndex

K = 10
BATCH = 64
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def clustered_dataset(
    n: int, d: int, n_queries: int, *, seed: int = 0, themes: int = 50, topics: int = 2000, burst: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(database (n, d), queries (n_queries, d)): float32 unit rows in three levels of clusters, themes > topics >
    bursts of ~`burst` near-shots, like a photo collection. Queries are fresh shots of existing bursts.
    Generated in chunks of 100k rows to bound the temporaries."""
    rng = np.random.default_rng(seed)
    theme_centres = unit(rng.standard_normal((themes, d), dtype=np.float32))
    topic_centres = unit(
        theme_centres[rng.integers(0, themes, topics)]
        + 0.8 / np.sqrt(d) * rng.standard_normal((topics, d), dtype=np.float32)
    )
    n_bursts = max(1, n // burst)
    burst_centres = unit(
        topic_centres[rng.integers(0, topics, n_bursts)]
        + 1.2 / np.sqrt(d) * rng.standard_normal((n_bursts, d), dtype=np.float32)
    )

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


def hit_ids(result) -> list[int]:
    """Content ids of one query's hits: ours is a SearchResult, the old index module's a list of dicts."""
    return [hit.id for hit in result.hits] if hasattr(result, "hits") else [hit["id"] for hit in result]


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth)]))


def bench_size(label: str, n: int, d: int, *, seed: int) -> list[dict]:
    n_queries = 8 * BATCH  # 512 queries: recall@10 measured to about +-0.003
    database, queries = clustered_dataset(n, d, n_queries, seed=seed)
    batches = [queries[i : i + BATCH] for i in range(0, n_queries, BATCH)]
    # Brute force costs ~n*d per query; fewer timed calls at 1M keep the run short without changing p50.
    singles_numpy = queries[: (200 if n <= 100_000 else 60)]
    singles_index = queries[:500]

    truth = np.concatenate([numpy_batch(database, b) for b in batches])
    numpy_single_ms = latencies(lambda q: numpy_single(database, q), singles_numpy)
    numpy_batch_ms = latencies(lambda b: numpy_batch(database, b), batches if n <= 100_000 else batches[:3], warmup=1)
    rows = [
        {
            "size": label,
            "method": "numpy brute force",
            "build_s": 0.0,
            "single": summarize(numpy_single_ms),
            "batch64": summarize(numpy_batch_ms),
            "recall@10": 1.0,
            "rss_delta_mb": database.nbytes / 2**20,
            "index_mb": database.nbytes / 2**20,
        }
    ]

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

    found = [hit_ids(result) for b in batches for result in index.search(b, k=K)]
    index_single_ms = latencies(lambda q: index.search(q, k=K), singles_index)
    index_batch_ms = latencies(lambda b: index.search(b, k=K), batches * 3, warmup=1)
    s = index.structure
    kind = "exact flat" if s.kind == "flat" else f"IVF nlist={s.nlist} nprobe={s.nprobe}"
    rows.append(
        {
            "size": label,
            "method": f"ImageIndex ({kind})",
            "build_s": built - started,
            "build_detail": {"add_s": added - started, "faiss_s": built - added},
            "single": summarize(index_single_ms),
            "batch64": summarize(index_batch_ms),
            "recall@10": recall_at_k(found, truth),
            "calibrated_recall": s.measured_recall,
            "rss_delta_mb": (rss_after - rss_before) / 2**20,
            "index_mb": sum(index.memory_bytes().values()) / 2**20,
        }
    )
    rows[-1]["speedup_single"] = rows[0]["single"]["p50_ms"] / rows[-1]["single"]["p50_ms"]
    rows[-1]["speedup_batch64"] = rows[0]["batch64"]["p50_ms"] / rows[-1]["batch64"]["p50_ms"]
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        "| size | method | build s | single p50 / p99 ms | batch64 p50 / p99 ms | recall@10 | RSS delta / index MB "
        "| speedup single / batch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{r['speedup_single']:.0f}x / {r['speedup_batch64']:.1f}x" if "speedup_single" in r else "1x"
        print(
            f"| {r['size']} | {r['method']} | {r['build_s']:.1f} | {r['single']['p50_ms']:.2f} / "
            f"{r['single']['p99_ms']:.2f} | {r['batch64']['p50_ms']:.1f} / {r['batch64']['p99_ms']:.1f} | "
            f"{r['recall@10']:.3f} | {r['rss_delta_mb']:.0f} / {r['index_mb']:.0f} | {speed} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated subset of 10k,100k,1M")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--archive", choices=list(ARCHIVE_SIZES), help="archive-scale figures at this size")
    parser.add_argument("--resync", choices=list(ARCHIVE_SIZES), help="unchanged re-sync of this many files")
    parser.add_argument("--old", action="store_true", help=f"also measure the index of commit {OLD_COMMIT}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--probe", nargs=5, help=argparse.SUPPRESS)  # internal: KIND FOLDER QUERIES TRUTH WORK
    parser.add_argument("--probe-resync", nargs=4, help=argparse.SUPPRESS)  # internal: KIND INDEX IMAGES WORK
    args = parser.parse_args()
    if args.probe:
        faiss.omp_set_num_threads(args.threads)
        print(json.dumps(probe_archive(args.probe[0], *map(Path, args.probe[1:]))))
        return
    if args.probe_resync:
        print(json.dumps(probe_resync(args.probe_resync[0], *map(Path, args.probe_resync[1:]))))
        return
    if args.archive or args.resync:
        archive_main(args)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    faiss.omp_set_num_threads(args.threads)
    print(
        f"faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, faiss threads {args.threads}, "
        f"d={args.dim}, k={K}",
        flush=True,
    )
    rows = []
    for label in sizes:
        size_rows = bench_size(label, SIZES[label], args.dim, seed=args.seed)
        rows.extend(size_rows)
        print_table(size_rows)
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


# ---------------------------------------------------------------------------------------------------------------
# Archive scale (issue 10): a persisted index in a folder, measured in fresh processes
# ---------------------------------------------------------------------------------------------------------------
OLD_COMMIT = "5332f97"
ARCHIVE_SIZES = {
    "100k": 100_000,
    "200k": 200_000,
    "500k": 500_000,
    "1M": 1_000_000,
    "2M": 2_000_000,
    "5M": 5_000_000,
    "10M": 10_000_000,
}


def rss_status() -> dict:
    with open("/proc/self/status") as handle:
        rows = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in handle
            if line.startswith(("VmRSS", "RssAnon", "RssFile", "VmHWM"))
        }
    return {
        "rss_mb": rows["VmRSS"],
        "rss_anon_mb": rows["RssAnon"],
        "rss_file_mb": rows["RssFile"],
        "peak_rss_mb": rows["VmHWM"],
    }


def old_index_module(work: Path):
    """clipapp/index.py as of OLD_COMMIT, imported from git under another name."""
    import importlib.util
    import subprocess

    path = work / "old_clipapp_index.py"
    if not path.exists():
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:clipapp/index.py"],
            cwd=Path(__file__).parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_clipapp_index", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_clipapp_index"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def build_archive(kind: str, folder: Path, database: np.ndarray, work: Path) -> dict:
    """Write the vectors into an index folder in bulk (chunks of 100k rows) and build its search structure."""
    n, d = database.shape
    started = time.perf_counter()
    if kind == "ours":
        from clipapp.index import FileInfo as Info
        from clipapp.index import ImageIndex as Index
    else:
        module = old_index_module(work)
        Info, Index = module.FileInfo, module.ImageIndex
    index = Index.create(folder, "bench", d)
    chunk = 100_000 if kind == "ours" else n  # the old index holds everything in RAM anyway
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        index.add_items(
            database[start:stop],
            [Info(path=f"/photos/{i:08d}.jpg", size=1000, mtime=0.0, sha256=f"{i:064x}") for i in range(start, stop)],
        )
        if kind == "ours":
            index.save()  # bounded transactions, as a sync does
    added = time.perf_counter()
    index.ensure_built()
    built = time.perf_counter()
    index.save()
    saved = time.perf_counter()
    return {
        "add_s": added - started,
        "build_s": built - added,
        "save_s": saved - built,
        "structure": str(index.structure),
        "disk_mb": folder_bytes(folder) / 2**20,
    }


def probe_archive(kind: str, folder: Path, queries_file: Path, truth_file: Path, work: Path) -> dict:
    """Run in a fresh process: open, first search, RSS, single-query latency and recall, add 10 + commit."""
    queries, truth = np.load(queries_file), np.load(truth_file)
    d = queries.shape[1]
    before = rss_status()
    started = time.perf_counter()
    if kind == "numpy":
        database = np.load(folder / "database.npy")
        search = lambda q: numpy_single(database, q)
    else:
        if kind == "ours":
            from clipapp.index import FileInfo as Info
            from clipapp.index import ImageIndex as Index
        else:
            module = old_index_module(work)
            Info, Index = module.FileInfo, module.ImageIndex
        index = Index.open(folder)
        search = lambda q: hit_ids(index.search(q, k=K)[0])
    search(queries[0])
    open_s = time.perf_counter() - started
    timed = queries[:60] if kind == "numpy" else queries
    ms = latencies(search, timed)
    found = [search(q) for q in timed]
    out = {
        "open_s": open_s,
        **summarize(ms),
        "recall@10": recall_at_k(found, truth[: len(timed)]),
        **rss_status(),
        "rss_before_open_mb": before["rss_mb"],
    }
    if kind != "numpy":
        commits = []
        rng = np.random.default_rng(int(time.time()))
        for repeat in range(3):
            vectors = unit(rng.standard_normal((10, d), dtype=np.float32))
            infos = [
                Info(
                    path=f"/new/{repeat}-{i}-{rng.integers(1 << 60)}.jpg",
                    size=1,
                    mtime=0.0,
                    sha256=f"{rng.integers(1 << 62):064x}",
                )
                for i in range(10)
            ]
            t = time.perf_counter()
            index.add_items(vectors, infos)
            index.save()
            commits.append(time.perf_counter() - t)
        out["add10_commit_s"] = float(np.median(commits))
        out["add10_commit_all_s"] = commits
        out["structure"] = str(index.structure)
    return out


def archive(n: int, d: int, *, runs: int, old: bool, seed: int, work: Path) -> list[dict]:
    import subprocess

    n_queries = 500
    t = time.perf_counter()
    database, queries = clustered_dataset(n, d, n_queries, seed=seed)
    print(f"generated {n} x {d} in {time.perf_counter() - t:.1f}s", flush=True)
    truth = np.concatenate([numpy_batch(database, queries[i : i + BATCH]) for i in range(0, n_queries, BATCH)])
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    rows = []
    kinds = ["ours", *(["old"] if old else []), "numpy"]
    for kind in kinds:
        folder = work / kind
        folder.mkdir()
        if kind == "numpy":
            t = time.perf_counter()
            np.save(folder / "database.npy", database)
            build = {"add_s": time.perf_counter() - t, "build_s": 0.0, "disk_mb": folder_bytes(folder) / 2**20}
        else:
            build = build_archive(kind, folder, database, work)
        print(kind, "built:", json.dumps(build), flush=True)
        for run in range(runs):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--probe",
                    kind,
                    str(folder),
                    str(work / "queries.npy"),
                    str(work / "truth.npy"),
                    str(work),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode:
                raise RuntimeError(out.stderr)
            row = {"method": kind, "n": n, "run": run, **build, **json.loads(out.stdout.strip().splitlines()[-1])}
            row["disk_mb"] = folder_bytes(folder) / 2**20
            rows.append(row)
            print(json.dumps(row), flush=True)
        if kind != "numpy":
            import shutil

            shutil.rmtree(folder)  # disk for the next one
    del database
    return rows


class StubEncoder:
    """Vectors from the file name, no decoding: the re-sync benchmark measures the no-change path only."""

    def __init__(self, spec: str, dim: int):
        self.spec, self.embed_dim = spec, dim

    def encode_image_files(self, paths, *, batch_size=32):
        for path in paths:
            seed = int.from_bytes(path.encode()[-8:].rjust(8, b"\0"), "little")
            yield (
                path,
                unit(np.random.default_rng(seed).standard_normal((1, self.embed_dim), dtype=np.float32))[0],
                None,
            )


def probe_resync(kind: str, index_folder: Path, images: Path, work: Path) -> dict:
    started = time.perf_counter()
    if kind == "ours":
        from clipapp.index import ImageIndex as Index
        from clipapp.index import sync_folder as sync
    else:
        module = old_index_module(work)
        Index, sync = module.ImageIndex, module.sync_folder
    index = Index.open(index_folder)
    opened = time.perf_counter()
    report = sync(index, images, StubEncoder("bench", 32))
    done = time.perf_counter()
    report = report.to_dict() if hasattr(report, "to_dict") else report  # ours: a SyncReport; the old code: a dict
    assert report["added"] == report["updated"] == report["removed"] == 0, report
    return {"total_s": done - started, "open_s": opened - started, "sync_s": done - opened, **rss_status()}


def resync(n: int, *, runs: int, old: bool, work: Path) -> list[dict]:
    import subprocess

    images = work / "images"
    t = time.perf_counter()
    for start in range(0, n, 1000):  # 1000 files per folder; tiny files: the no-change path does not read them
        folder = images / f"{start // 1000:04d}"
        folder.mkdir(parents=True)
        for i in range(start, min(n, start + 1000)):
            (folder / f"{i:07d}.jpg").write_bytes(i.to_bytes(8, "little"))
    print(f"wrote {n} files in {time.perf_counter() - t:.1f}s", flush=True)
    rows = []
    for kind in ["ours", *(["old"] if old else [])]:
        if kind == "ours":
            from clipapp.index import ImageIndex as Index
            from clipapp.index import sync_folder as sync
        else:
            module = old_index_module(work)
            Index, sync = module.ImageIndex, module.sync_folder
        index_folder = work / f"resync-{kind}"
        t = time.perf_counter()
        sync(Index.create(index_folder, "bench", 32), images, StubEncoder("bench", 32))
        print(kind, f"first sync {time.perf_counter() - t:.1f}s", flush=True)
        for run in range(runs):
            out = subprocess.run(
                [sys.executable, __file__, "--probe-resync", kind, str(index_folder), str(images), str(work)],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode:
                raise RuntimeError(out.stderr)
            row = {"method": kind, "files": n, "run": run, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def spread(rows: list[dict], method: str, key: str) -> str:
    values = sorted(r[key] for r in rows if r["method"] == method and key in r)
    if not values:
        return "-"
    fmt = (lambda v: f"{v:.3f}") if max(values) < 10 else (lambda v: f"{v:.0f}")
    return f"{fmt(values[len(values) // 2])} ({fmt(values[0])}-{fmt(values[-1])})"


def print_archive(rows: list[dict], resync_rows: list[dict]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print("\n| figure (median (min-max) of runs) | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for key, label in [
        ("open_s", "open + first search, s"),
        ("rss_mb", "RSS with the index open, MB"),
        ("rss_anon_mb", "  of which anonymous, MB"),
        ("add10_commit_s", "add 10 + commit, s"),
        ("p50_ms", "single query p50, ms"),
        ("p99_ms", "single query p99, ms"),
        ("recall@10", "recall@10 vs exact"),
        ("disk_mb", "on disk, MB"),
        ("build_s", "build, s"),
        ("add_s", "bulk add (+ commits), s"),
    ]:
        print(f"| {label} | " + " | ".join(spread(rows, m, key) for m in methods) + " |")
    if resync_rows:
        methods = list(dict.fromkeys(r["method"] for r in resync_rows))
        print(f"\n| unchanged re-sync of {resync_rows[0]['files']} files | " + " | ".join(methods) + " |")
        print("|---|" + "---|" * len(methods))
        for key, label in [
            ("total_s", "open + sync, s"),
            ("open_s", "open, s"),
            ("sync_s", "sync, s"),
            ("rss_mb", "RSS, MB"),
        ]:
            print(f"| {label} | " + " | ".join(spread(resync_rows, m, key) for m in methods) + " |")


def archive_main(args) -> None:
    import tempfile

    faiss.omp_set_num_threads(args.threads)
    work_root = Path(os.environ.get("BENCH_TMP", "/tmp"))
    with tempfile.TemporaryDirectory(dir=work_root, prefix="bench-archive-") as tmp:
        work = Path(tmp)
        rows = (
            archive(ARCHIVE_SIZES[args.archive], args.dim, runs=args.runs, old=args.old, seed=args.seed, work=work)
            if args.archive
            else []
        )
        resync_rows = resync(ARCHIVE_SIZES[args.resync], runs=args.runs, old=args.old, work=work) if args.resync else []
    print_archive(rows, resync_rows)
    if args.json:
        args.json.write_text(json.dumps({"archive": rows, "resync": resync_rows}, indent=2))


if __name__ == "__main__":
    main()
