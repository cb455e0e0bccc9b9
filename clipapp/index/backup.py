"""Consistent backup of an index that is in use: the database as of one moment, the vector file up to that moment.

Copying the folder while a sync commits can pair a database and a vector file from different moments. Here:

1. the vector file is opened first (as of the committed compaction epoch, see store.py);
2. SQLite's online backup API copies the database in one step, i.e. one read snapshot: readers never block writers
   in WAL mode, so a sync goes on committing meanwhile (the copy simply ends before its later commits);
3. the copy's own meta says which rows it refers to (`next_id`) and which epoch: rows below next_id are immutable
   within an epoch (append-only, ids never reused), so exactly those rows are copied from the descriptor opened in
   step 1; if a compaction committed in between (epoch moved on), the copy is redone;
4. the faiss cache is copied where it covers no more than the snapshot (otherwise the copy rebuilds it on first
   search); the whole copy is written in a temporary folder beside DEST and renamed to DEST at the end, so a crash
   never leaves a half backup under DEST's name.

Memory: one chunk of rows; the copy uses copy_file_range (no user-space copy) where the OS has it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipapp.errors import ClipAppError
from clipapp.index.store import DB_NAME, VECTOR_EPOCH_KEY, VECTORS_NAME, Store
from clipapp.index.structure import CACHE_META
from clipapp.progress import ProgressFn
from clipapp.storage import fsync_dir

COPY_CHUNK_BYTES = 64 << 20
MAX_ATTEMPTS = 5  # each retry means a compaction committed during the copy


@dataclass(frozen=True)
class BackupReport:
    """What `backup_index` wrote."""

    dest: str
    images: int  # distinct images (vectors) in the copy
    paths: int
    bytes: int  # database + vector file + search cache
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `clipapp index --backup DEST --json`: {"dest", "images", "paths", "bytes", "seconds"}."""
        return {
            "dest": self.dest,
            "images": self.images,
            "paths": self.paths,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def _copy_rows(src_fd: int, dest: Path, nbytes: int, progress: ProgressFn | None) -> None:
    with open(dest, "wb") as out:
        done = 0
        while done < nbytes:
            step = min(COPY_CHUNK_BYTES, nbytes - done)
            if hasattr(os, "copy_file_range"):
                got = os.copy_file_range(src_fd, out.fileno(), step, done, done)
            else:  # pragma: no cover - macOS/Windows
                data = os.pread(src_fd, step, done)
                got = out.write(data)
            if got <= 0:
                raise ClipAppError(f"The vector file ended after {done} bytes; the index needs {nbytes}.")
            done += got
            if progress is not None:
                progress(done, nbytes, "Copying the vectors")
        out.flush()
        os.fsync(out.fileno())


def _snapshot_meta(db_path: Path) -> dict[str, str]:
    with sqlite3.connect(db_path) as db:
        return dict(db.execute("SELECT key, value FROM meta"))


def _copy_cache(source: Path, work: Path, meta: dict[str, str], removal_seq: int) -> None:
    """Copy the faiss cache if it covers nothing past the snapshot (a later one would not match the copy)."""
    try:
        cache = json.loads((source / CACHE_META).read_text(encoding="utf-8"))
        fits = (
            int(cache.get("vector_epoch", 0)) == int(meta.get(VECTOR_EPOCH_KEY, 0))
            and int(cache["next_id"]) <= int(meta["next_id"])
            and int(cache["removal_seq"]) <= removal_seq
        )
        if fits:
            shutil.copyfile(source / cache["file"], work / cache["file"])
            (work / CACHE_META).write_text(json.dumps(cache, indent=1), encoding="utf-8")
    except (OSError, ValueError, KeyError):  # none, or rewritten meanwhile: the copy rebuilds it when searched
        for name in (CACHE_META, *(p.name for p in work.glob("faiss-*.index"))):
            (work / name).unlink(missing_ok=True)


def _attempt(store: Store, work: Path, progress: ProgressFn | None) -> bool:
    """One copy into `work`; False if a compaction committed meanwhile (the caller retries)."""
    epoch = store.vector_epoch
    with sqlite3.connect(work / DB_NAME) as target:
        store.db.backup(target)  # pages=-1: the whole database in one step, one consistent snapshot
    target.close()
    meta = _snapshot_meta(work / DB_NAME)
    if int(meta.get(VECTOR_EPOCH_KEY, 0)) != epoch:
        return False
    with sqlite3.connect(work / DB_NAME) as db:
        removal_seq = int(db.execute("SELECT coalesce(max(seq), 0) FROM removed_contents").fetchone()[0])
    db.close()
    _copy_rows(store.vector_fd, work / VECTORS_NAME, int(meta["next_id"]) * store.row_bytes, progress)
    _copy_cache(store.folder, work, meta, removal_seq)
    return True


def backup_index(
    source: str | os.PathLike, dest: str | os.PathLike, progress: ProgressFn | None = None
) -> BackupReport:
    """Write a consistent copy of the index at `source` to the new folder `dest` while others may be writing."""
    started = time.perf_counter()
    source, dest = Path(source), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ClipAppError(f"{dest} already exists and is not an empty folder; choose a new folder for the backup.")
    if dest.resolve() == source.resolve():
        raise ClipAppError("The backup folder must differ from the index folder.")
    store = Store(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".backup", dir=dest.parent))
    try:
        for _ in range(MAX_ATTEMPTS):
            if _attempt(store, work, progress):
                break
            store.reopen_vectors()
            for entry in work.iterdir():
                entry.unlink()
        else:
            raise ClipAppError(f"The index at {source} was compacted {MAX_ATTEMPTS} times during the backup; retry.")
        with open(work / DB_NAME, "rb") as handle:
            os.fsync(handle.fileno())
        fsync_dir(work)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(work, dest)
        fsync_dir(dest.parent)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    copy = Store(dest)
    try:
        images, paths = copy.content_count(), copy.path_count()
    finally:
        copy.close()
    size = sum(entry.stat().st_size for entry in dest.iterdir() if entry.is_file())
    return BackupReport(str(dest), images, paths, size, time.perf_counter() - started)
