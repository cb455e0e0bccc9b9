"""Where the index keeps its float32 vectors: BLOBs in SQLite vs an append-only memory-mapped file keyed by id.

    flock /tmp/bench.lock .venv/bin/python bench/bench_vector_storage.py [--n 1000000] [--dim 512]

Measures, for each layout, in fresh subprocesses: bulk write, bytes on disk, open, fetching 100 random vectors
(one query's exact re-rank), a full scan (a faiss rebuild / iter_vectors), adding 10 vectors + commit, and the
process RSS after 200 re-rank fetches. The decision it informs is documented in clipapp/index/store.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 50_000


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def vectors(start: int, stop: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(start).standard_normal((stop - start, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write(kind: str, folder: Path, n: int, dim: int) -> float:
    started = time.perf_counter()
    db = sqlite3.connect(folder / "index.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE contents (id INTEGER PRIMARY KEY, sha256 TEXT UNIQUE, vector BLOB)")
    handle = open(folder / "vectors.f32", "wb") if kind == "file" else None
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        block = vectors(start, stop, dim)
        db.execute("BEGIN")
        if kind == "blob":
            db.executemany("INSERT INTO contents VALUES (?, ?, ?)",
                           ((i, f"{i:064x}", block[i - start].tobytes()) for i in range(start, stop)))
        else:
            handle.write(block.tobytes())
            db.executemany("INSERT INTO contents VALUES (?, ?, NULL)", ((i, f"{i:064x}") for i in range(start, stop)))
        db.execute("COMMIT")
    if handle:
        handle.close()
    db.close()
    return time.perf_counter() - started


def probe(kind: str, folder: Path, n: int, dim: int) -> dict:
    started = time.perf_counter()
    db = sqlite3.connect(folder / "index.sqlite", isolation_level=None)
    count = db.execute("SELECT max(id) + 1 FROM contents").fetchone()[0]
    mapped = np.memmap(folder / "vectors.f32", dtype=np.float32, mode="r", shape=(count, dim)) if kind == "mmap" else None
    fd = os.open(folder / "vectors.f32", os.O_RDONLY) if kind == "pread" else None
    opened = time.perf_counter() - started
    rng = np.random.default_rng(1)

    def fetch(ids: np.ndarray) -> np.ndarray:
        if kind == "mmap":
            return np.asarray(mapped[np.sort(ids)])
        if kind == "pread":  # what clipapp/index/store.py does
            out = np.empty((len(ids), dim), dtype=np.float32)
            buffer = memoryview(out).cast("B")
            for row, i in enumerate(np.sort(ids).tolist()):
                os.preadv(fd, [buffer[row * dim * 4:(row + 1) * dim * 4]], i * dim * 4)
            return out
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT vector FROM contents WHERE id IN ({marks})", ids.tolist()).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, dim)

    times = []
    for _ in range(200):
        ids = rng.choice(n, 100, replace=False)
        t = time.perf_counter()
        fetch(ids)
        times.append(time.perf_counter() - t)
    rss_after_fetches = rss_mb()
    t = time.perf_counter()
    total = 0.0
    if kind == "mmap":
        for start in range(0, count, CHUNK):
            total += float(np.asarray(mapped[start:start + CHUNK]).sum())
    elif kind == "pread":
        for start in range(0, count, CHUNK):
            rows = min(CHUNK, count - start)
            total += float(np.frombuffer(os.pread(fd, rows * dim * 4, start * dim * 4), dtype=np.float32).sum())
    else:
        for start in range(0, count, CHUNK):
            rows = db.execute("SELECT vector FROM contents WHERE id >= ? AND id < ? ORDER BY id",
                              (start, start + CHUNK)).fetchall()
            total += float(np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).sum())
    scan = time.perf_counter() - t
    t = time.perf_counter()
    block = vectors(n, n + 10, dim)
    db.execute("BEGIN IMMEDIATE")
    if kind in ("mmap", "pread"):
        with open(folder / "vectors.f32", "r+b") as handle:
            handle.seek(count * dim * 4)
            handle.write(block.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        db.executemany("INSERT OR REPLACE INTO contents VALUES (?, ?, NULL)", ((n + i, f"x{n + i:063x}") for i in range(10)))
    else:
        db.executemany("INSERT OR REPLACE INTO contents VALUES (?, ?, ?)",
                       ((n + i, f"x{n + i:063x}", block[i].tobytes()) for i in range(10)))
    db.execute("COMMIT")
    add10 = time.perf_counter() - t
    return {"open_s": opened, "fetch100_p50_ms": 1000 * float(np.median(times)),
            "fetch100_p99_ms": 1000 * float(np.percentile(times, 99)), "rss_after_fetches_mb": rss_after_fetches,
            "full_scan_s": scan, "add10_commit_s": add10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)  # internal: kind folder
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], Path(args.probe[1]), args.n, args.dim)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/tmp")) as tmp:
        for layout, kinds in (("file", ("mmap", "pread")), ("blob", ("blob",))):
            folder = Path(tmp) / layout
            folder.mkdir()
            write_s = write(layout, folder, args.n, args.dim)
            disk = sum(f.stat().st_size for f in folder.iterdir())
            for kind, run in [(kind, run) for kind in kinds for run in range(3)]:
                out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--dim", str(args.dim),
                                      "--probe", kind, str(folder)], capture_output=True, text=True, check=True)
                print(json.dumps({"layout": layout, "read": kind, "run": run, "write_s": round(write_s, 1), "disk_mb": disk >> 20,
                                  **{k: round(v, 4) for k, v in json.loads(out.stdout).items()}}), flush=True)
            # the probe appended 10 rows per run; the next run's ids overlap -> rebuild per layout is not needed
            os.system(f"rm -rf {folder}")


if __name__ == "__main__":
    main()
