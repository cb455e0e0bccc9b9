"""The index's system of record: one SQLite database (WAL) plus an append-only float32 vector file.

Layout of an index folder (schema documented for users in docs/index-format.md):

    index.sqlite   meta (model spec, dim, format version, settings, commit counter), contents (one row per
                   distinct image content: id, sha256, added_at), paths (one row per indexed path: path,
                   content_id, size, mtime, added_at, source, captured_at), removed_contents (log of deleted
                   content ids, so a saved faiss cache can catch up), tags (content_id, label, prob), and a view
                   `images` joining paths and contents.
    vectors.f32    row i = the float32 embedding of content id i (dim * 4 bytes per row, no header, native
                   little-endian: numpy.fromfile(path, "<f4").reshape(-1, dim) reads it), written
                   before the transaction that inserts row i into `contents` commits. Rows of uncommitted or
                   deleted contents are dead space and are never read.

Why a separate vector file rather than float32 BLOBs in SQLite (bench/bench_vector_storage.py, 1M x 512 on this
2-core machine, figures in docs/benchmarks.md): the faiss rebuild, the exact re-rank of compressed
search and `iter_vectors` read vectors by id. From the file, 100 random rows (one query's re-rank) take ~0.2 ms and
a full scan 2-3 s; as BLOBs 0.7 ms and 15-19 s, the database is 4.0 GB instead of 2.1 GB (one 2 KB row per 4 KB
page) and the bulk write takes 1.7x longer. Rows are read with pread, not a memory map: a map's page faults also map
neighbouring page-cache pages into the process (fault-around), so 200 re-rank queries grew the RSS to 2 GB; pread
leaves them in the kernel's cache (RSS 43 MB). SQLite keeps what it is good at: rows, transactions, locking and
ad-hoc queries.

Crash safety and concurrency: every change runs in one `BEGIN IMMEDIATE` transaction (SQLite's write lock serialises
writers across processes; readers never block in WAL mode). New vectors are pwritten at the ids allocated inside
that transaction and fsynced before COMMIT, so a committed content row always has its vector on disk; a killed
writer leaves only rows past the committed `next_id`, which the next writer overwrites.

Creation is atomic: the schema and meta are committed in a temporary database beside the target, which is then
hard-linked into place (os.link fails if the target exists), so no process ever sees a half-made index and two
processes creating one folder at once agree on one model: the loser opens the winner's index and refuses it if the
model differs.

Compaction (compaction.py) renumbers content ids and writes `vectors.f32.compact-<epoch>`; the commit that
renumbers also sets meta `vector_epoch`, and the file is then renamed over `vectors.f32`. A store opening (or
noticing a new epoch) finishes a rename a killed compaction left pending, so the database and the vector file
always belong together.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.index.filters import DATE_SQL, SearchFilter
from clipapp.storage import fsync_dir

DB_NAME = "index.sqlite"
VECTORS_NAME = "vectors.f32"
FORMAT_NAME = "clipapp-image-index"
FORMAT_VERSION = 2  # 1: manifest.json + generation files (clipapp/index/migrate.py converts it)
BUSY_TIMEOUT_S = 60.0  # another process's commit holds the write lock for one batch at most
_SQL_VARS = 900  # below SQLite's default limit of bound parameters per statement
# Indexes the search filters (filters.py) need; an index made before them gets them when it is first opened.
FILTER_INDEXES = {
    "paths_by_captured": "CREATE INDEX IF NOT EXISTS paths_by_captured ON paths(captured_at, content_id) "
    "WHERE captured_at IS NOT NULL",
    "paths_by_undated_mtime": "CREATE INDEX IF NOT EXISTS paths_by_undated_mtime ON paths(mtime, content_id) "
    "WHERE captured_at IS NULL",
}
VECTOR_EPOCH_KEY = "vector_epoch"  # meta: how many compactions rewrote vectors.f32 (absent: 0)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contents (
    id       INTEGER PRIMARY KEY,          -- row of its vector in vectors.f32, never reused
    sha256   TEXT NOT NULL UNIQUE,         -- of the file bytes (uploads: of mode, size and pixels)
    added_at REAL NOT NULL                 -- unix time
);
CREATE TABLE IF NOT EXISTS paths (
    seq         INTEGER PRIMARY KEY,       -- insertion order: a content's first path is its display path
    path        TEXT NOT NULL UNIQUE,
    content_id  INTEGER NOT NULL REFERENCES contents(id),
    size        INTEGER NOT NULL,
    mtime       REAL NOT NULL,
    added_at    REAL NOT NULL,
    source      TEXT NOT NULL,             -- 'file' (sync_folder) or 'upload' (add_images)
    captured_at TEXT                       -- EXIF DateTimeOriginal as 'YYYY-MM-DD HH:MM:SS', where present
);
CREATE INDEX IF NOT EXISTS paths_by_content ON paths(content_id);
CREATE INDEX IF NOT EXISTS paths_by_captured ON paths(captured_at, content_id) WHERE captured_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS paths_by_undated_mtime ON paths(mtime, content_id) WHERE captured_at IS NULL;
CREATE TABLE IF NOT EXISTS removed_contents (seq INTEGER PRIMARY KEY AUTOINCREMENT, content_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    content_id INTEGER NOT NULL REFERENCES contents(id),
    label      TEXT NOT NULL,
    prob       REAL NOT NULL,
    PRIMARY KEY (content_id, label)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_label ON tags(label, content_id);
CREATE VIEW IF NOT EXISTS images AS
    SELECT p.path, p.size, p.mtime, c.sha256, p.added_at, p.source, p.captured_at, p.content_id
    FROM paths p JOIN contents c ON c.id = p.content_id;
"""


@dataclass(frozen=True)
class FileInfo:
    """What we know about one image before it has an id: where it is and what its content hash is."""

    path: str
    size: int
    mtime: float
    sha256: str
    source: str = "file"  # "file": found by sync_folder, removed when it disappears; "upload": add_images
    captured_at: str | None = None  # EXIF capture date, where the file has one


@dataclass(frozen=True)
class ItemRecord:
    """One indexed path. Several records share an `id` when their files have identical content."""

    id: int
    path: str
    size: int
    mtime: float
    sha256: str
    added_at: float
    source: str = "file"
    captured_at: str | None = None


_RECORD_SQL = (
    "SELECT p.content_id, p.path, p.size, p.mtime, c.sha256, p.added_at, p.source, p.captured_at "
    "FROM paths p JOIN contents c ON c.id = p.content_id"
)


def compacted_vectors_name(epoch: int) -> str:
    """The file a compaction to `epoch` writes before it is renamed to vectors.f32."""
    return f"{VECTORS_NAME}.compact-{int(epoch)}"


def finish_compaction(folder: Path, epoch: int) -> None:
    """Rename the vector file of committed compaction `epoch` into place if a killed compactor left it pending.

    Idempotent and safe from several processes at once: the rename is atomic, and whoever comes second finds
    nothing to rename. A file of an uncommitted compaction has a higher epoch than the database's and is ignored.
    """
    if epoch <= 0:
        return
    try:
        os.replace(folder / compacted_vectors_name(epoch), folder / VECTORS_NAME)
    except FileNotFoundError:
        return
    fsync_dir(folder)


def _create_database(folder: Path, meta: dict) -> None:
    """Commit a new database in a temporary file and link it into place unless another process was first."""
    db_path = folder / DB_NAME
    tmp = folder / f".{DB_NAME}.{os.getpid()}.{threading.get_ident()}.creating"
    tmp.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            rows = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "next_id": 0,
                "commits": 0,
                "created_at": time.time(),
                **meta,
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in rows.items()])
            db.execute("COMMIT")
        finally:
            db.close()  # the last connection checkpoints the WAL into the file and removes it
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, db_path)  # atomic: fails if another process created the index first
        except FileExistsError:
            return
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)


def _chunks(items: Sequence, size: int = _SQL_VARS) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Store:
    """SQLite rows + the vector file of one index folder. Not thread-safe by itself: ImageIndex locks."""

    def __init__(self, folder: Path, *, create: dict | None = None):
        self.folder = Path(folder)
        db_path = self.folder / DB_NAME
        if create is None and not db_path.exists():
            raise ClipAppError(
                f"No index at {self.folder}. Build one first, e.g. "
                f"`python -m clipapp index IMAGE_FOLDER --index {self.folder}`."
            )
        self._db: sqlite3.Connection | None = None  # None once closed
        try:
            if create is not None and not db_path.exists():
                _create_database(self.folder, create)
            db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a kill -9 loses no commit
            self.meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            if self._db is not None:
                self._db.close()
            raise ClipAppError(
                f"The index database {db_path} cannot be read ({exc}). Rebuild the index "
                "(delete the folder and index the images again)."
            ) from exc
        self._check_format(create)
        self._add_filter_indexes()
        self.dim = int(self.meta["embed_dim"])
        self.row_bytes = 4 * self.dim
        self._wrote_vectors = False
        self._snapshot = False  # a read_snapshot() transaction is open
        self._lock = threading.RLock()
        # Taken before the vector file is opened: any compaction committed after it changes data_version, so
        # ImageIndex (which starts from this value) notices and reopens the file.
        self.opened_data_version = self.data_version()
        self._vector_fd = -1
        self.vector_epoch = 0
        self.reopen_vectors()
        top = self.max_content_id()
        if top is not None and os.fstat(self._vector_fd).st_size < (top + 1) * self.row_bytes:
            self.close()
            raise ClipAppError(
                f"The index at {self.folder} is damaged: {VECTORS_NAME} is shorter than its "
                "database says. Rebuild it (delete the folder and index the images again)."
            )

    def _check_format(self, create: dict | None) -> None:
        db_path = self.folder / DB_NAME
        problem = None
        if self.meta.get("format") != FORMAT_NAME:
            problem = f"{db_path} is not a clipapp image index."
        elif int(self.meta.get("format_version", 0)) > FORMAT_VERSION:
            problem = (
                f"The index at {self.folder} was written by a newer clipapp (format "
                f"{self.meta['format_version']}, this one reads {FORMAT_VERSION}). Upgrade clipapp."
            )
        elif create is not None and (
            self.meta.get("model_spec") != str(create.get("model_spec"))
            or self.meta.get("embed_dim") != str(create.get("embed_dim"))
        ):
            # Another process created this index first (or at the same moment) with another model.
            spec, dim = self.meta.get("model_spec"), self.meta.get("embed_dim")
            problem = (
                f"The index at {self.folder} was created by another process with model {spec} ({dim}-d "
                f"embeddings), not {create.get('model_spec')}. Use --model {spec} for this index, or choose "
                "another folder."
            )
        if problem is not None:
            self.db.close()
            self._db = None
            raise ClipAppError(problem)

    def _add_filter_indexes(self) -> None:
        """Create the filter indexes an older index lacks (once; SQLite's write lock makes it safe to race). A
        read-only index folder is still searched, filtering by scanning instead."""
        have = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        missing = [sql for name, sql in FILTER_INDEXES.items() if name not in have]
        if not missing:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for sql in missing:
                self.db.execute(sql)
            self.db.execute("COMMIT")
        except sqlite3.OperationalError:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def read_vector_epoch(self) -> int:
        """The committed compaction epoch (meta `vector_epoch`)."""
        return int(self.get_meta(VECTOR_EPOCH_KEY, "0"))

    def reopen_vectors(self) -> None:
        """(Re)open vectors.f32 as of the committed epoch, finishing a compaction's pending rename first."""
        while True:
            epoch = self.read_vector_epoch()
            finish_compaction(self.folder, epoch)
            fd = os.open(self.folder / VECTORS_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            # Unchanged epoch: no compaction committed (so none renamed) since the read, the file is that epoch's.
            if self.read_vector_epoch() == epoch:
                break
            os.close(fd)
        if self._vector_fd >= 0:
            os.close(self._vector_fd)
        self._vector_fd, self.vector_epoch = fd, epoch

    @property
    def vector_fd(self) -> int:
        """The open vector file (compaction and backup read it)."""
        return self._vector_fd

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection; a closed store says so instead of failing on None."""
        if self._db is None:
            raise ClipAppError(f"The index at {self.folder} is closed; open it again to use it.")
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._db.close()
                os.close(self._vector_fd)
                self._db = None

    # -- transactions -----------------------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """The write transaction is open (a read_snapshot is not one)."""
        return self.db.in_transaction and not self._snapshot

    @contextmanager
    def read_snapshot(self) -> Iterator[int]:
        """Every read inside sees one committed state (a read transaction; writers go on committing), whose
        `vector_epoch` it yields. Inside the write transaction, that one: nobody else can commit meanwhile.

        Do not reopen the vector file inside one: the snapshot's epoch may already be older than the file's.
        """
        if self.db.in_transaction:
            yield self.read_vector_epoch()
            return
        self.db.execute("BEGIN DEFERRED")
        self._snapshot = True
        try:
            yield self.read_vector_epoch()  # the first read fixes the snapshot
        finally:
            self._snapshot = False
            if self.db.in_transaction:
                self.db.execute("COMMIT")  # reads only: ends the snapshot

    def begin(self) -> bool:
        """Start the write transaction if none is open (waits for another writer). True if it was started now."""
        if self._snapshot:
            raise RuntimeError("a write inside read_snapshot(): its reads would not be the write lock's")
        if self.db.in_transaction:
            return False
        self.db.execute("BEGIN IMMEDIATE")
        return True

    def commit(self) -> None:
        if not self.db.in_transaction:
            return
        if self._wrote_vectors:
            os.fdatasync(self._vector_fd)  # the vectors are on disk before the rows that refer to them
            self._wrote_vectors = False
        self.set_meta("commits", self.commits() + 1)
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._wrote_vectors = False

    def data_version(self) -> int:
        """Changes whenever another connection commits (PRAGMA data_version): the cue to refresh."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    # -- meta -------------------------------------------------------------------------------------------------
    @overload
    def get_meta(self, key: str, default: str) -> str: ...
    @overload
    def get_meta(self, key: str, default: None = None) -> str | None: ...
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def next_id(self) -> int:
        return int(self.get_meta("next_id", "0"))

    def commits(self) -> int:
        return int(self.get_meta("commits", "0"))

    def max_content_id(self) -> int | None:
        return self.db.execute("SELECT max(id) FROM contents").fetchone()[0]

    def removal_seq(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(seq), 0) FROM removed_contents").fetchone()[0])

    # -- counts and lookups -----------------------------------------------------------------------------------
    def content_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM contents").fetchone()[0])

    def path_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM paths").fetchone()[0])

    def record(self, path: str) -> ItemRecord | None:
        row = self.db.execute(_RECORD_SQL + " WHERE p.path = ?", (path,)).fetchone()
        return None if row is None else ItemRecord(*row)

    def records(self, *, prefix: str | None = None, source: str | None = None) -> Iterator[ItemRecord]:
        """Records in insertion order; `prefix`: only paths starting with it (uses the path index)."""
        where, args = [], []
        if prefix is not None:
            # A range on the UNIQUE path index instead of LIKE, which would scan (and treat % and _ specially).
            where.append("p.path >= ? AND p.path < ?")
            args += [prefix, prefix + "\U0010ffff"]
        if source is not None:
            where.append("p.source = ?")
            args.append(source)
        sql = _RECORD_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY p.seq"
        for row in self.db.execute(sql, args):
            yield ItemRecord(*row)

    def file_stats(self, prefix: str) -> dict[str, tuple[int, float]]:
        """{path: (size, mtime)} of the 'file' records under `prefix`: all a no-change re-sync needs."""
        rows = self.db.execute(
            "SELECT path, size, mtime FROM paths WHERE path >= ? AND path < ? AND source = 'file'",
            (prefix, prefix + "\U0010ffff"),
        )
        return {path: (size, mtime) for path, size, mtime in rows}

    def id_for_hash(self, sha256: str) -> int | None:
        row = self.db.execute("SELECT id FROM contents WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def paths_for_ids(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """{id: [paths in insertion order]} for the ids that have paths."""
        found: dict[int, list[str]] = {}
        unique = sorted({int(i) for i in ids})
        for chunk in _chunks(unique):
            marks = ",".join("?" * len(chunk))
            for content_id, path in self.db.execute(
                f"SELECT content_id, path FROM paths WHERE content_id IN ({marks}) ORDER BY seq", chunk
            ):
                found.setdefault(content_id, []).append(path)
        return found

    def records_for_ids(self, ids: Sequence[int]) -> list[ItemRecord]:
        """The records of every path of the content `ids`, in insertion order (duplicates.py's group members)."""
        found: list[tuple[int, ItemRecord]] = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            marks = ",".join("?" * len(chunk))
            sql = _RECORD_SQL.replace("SELECT ", "SELECT p.seq, ", 1) + f" WHERE p.content_id IN ({marks})"
            found += [(row[0], ItemRecord(*row[1:])) for row in self.db.execute(sql, chunk)]
        return [record for _, record in sorted(found, key=lambda pair: pair[0])]

    def shared_content_ids(self) -> np.ndarray:
        """Content ids with more than one path (byte-identical copies), from the paths_by_content index."""
        rows = self.db.execute("SELECT content_id FROM paths GROUP BY content_id HAVING count(*) > 1").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def content_ids(self, *, after: int = -1) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM contents WHERE id > ? ORDER BY id", (after,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def removed_since(self, seq: int, *, below: int) -> np.ndarray:
        rows = self.db.execute(
            "SELECT content_id FROM removed_contents WHERE seq > ? AND content_id < ?", (seq, below)
        ).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    # -- vectors ----------------------------------------------------------------------------------------------
    def _check_rows(self, stop: int) -> None:
        size = os.fstat(self._vector_fd).st_size // self.row_bytes
        if size < stop:
            raise ClipAppError(
                f"The index at {self.folder} is damaged: {VECTORS_NAME} has {size} rows, its "
                f"database needs {stop}. Rebuild it (delete the folder and index the images again)."
            )

    def vectors_for(self, ids: np.ndarray) -> np.ndarray:
        """float32 (len(ids), dim) copy of the vectors of these content ids, in the given order.

        pread, not a memory map: a map's page faults also map neighbouring page-cache pages into the process
        (fault-around), so 200 re-rank queries at 1M x 512 grew RSS to 2 GB; pread keeps the pages in the
        kernel's cache only (bench/bench_vector_storage.py).
        """
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if not len(ids):
            return out
        self._check_rows(int(ids.max()) + 1)
        if len(ids) > 1 and np.all(np.diff(ids) == 1):  # one run: one read
            return self.vector_rows(int(ids[0]), int(ids[-1]) + 1)
        buffer = out.data.cast("B")  # ndarray.data: the array's own buffer, C-contiguous
        fd, size = self._vector_fd, self.row_bytes
        for row, item_id in enumerate(ids.tolist()):
            os.preadv(fd, [buffer[row * size : (row + 1) * size]], item_id * size)
        return out

    def vector_rows(self, start: int, stop: int) -> np.ndarray:
        """float32 copy of vector rows [start, stop): dead rows (deleted ids) included."""
        out = np.empty((max(0, stop - start), self.dim), dtype=np.float32)
        if stop <= start:
            return out
        self._check_rows(stop)
        view, offset = out.data.cast("B"), start * self.row_bytes
        while view:
            got = os.preadv(self._vector_fd, [view], offset)
            if got <= 0:
                raise ClipAppError(f"The index at {self.folder} is damaged: {VECTORS_NAME} ends early.")
            view, offset = view[got:], offset + got
        return out

    def _write_vectors(self, first_id: int, vectors: np.ndarray) -> None:
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        view, offset = data.data.cast("B"), first_id * self.row_bytes
        while view:  # pwrite may write less than asked for large buffers
            written = os.pwrite(self._vector_fd, view, offset)
            view, offset = view[written:], offset + written
        self._wrote_vectors = True

    # -- mutations (inside a transaction) ---------------------------------------------------------------------
    def add_contents(self, sha256s: Sequence[str], vectors: np.ndarray, *, now: float) -> list[int]:
        """New content rows with consecutive fresh ids; their vectors are written at those rows."""
        first = self.next_id()
        ids = list(range(first, first + len(sha256s)))
        if not ids:
            return ids
        self._write_vectors(first, vectors)
        self.db.executemany(
            "INSERT INTO contents (id, sha256, added_at) VALUES (?, ?, ?)",
            zip(ids, sha256s, [now] * len(ids), strict=True),
        )
        self.set_meta("next_id", first + len(ids))
        return ids

    def put_contents_at(
        self, ids: Sequence[int], sha256s: Sequence[str], added_at: Sequence[float], vectors: np.ndarray
    ) -> None:
        """Migration only: content rows with given (increasing) ids, vectors at those rows."""
        id_array = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(id_array), 65536):
            block = id_array[start : start + 65536]
            # Runs of consecutive ids are written in one pwrite each; gaps stay dead space.
            breaks = np.flatnonzero(np.diff(block) != 1) + 1
            for run in np.split(np.arange(len(block)), breaks):
                if len(run):
                    self._write_vectors(int(block[run[0]]), vectors[start + run[0] : start + run[-1] + 1])
        self.db.executemany(
            "INSERT INTO contents (id, sha256, added_at) VALUES (?, ?, ?)",
            zip(id_array.tolist(), sha256s, added_at, strict=True),
        )

    def put_paths(self, rows: Iterable[tuple]) -> None:
        """(path, content_id, size, mtime, added_at, source, captured_at) rows; an existing path is replaced
        (and moves to the end of the insertion order, as a newly added path)."""
        rows = list(rows)
        self.db.executemany("DELETE FROM paths WHERE path = ?", [(r[0],) for r in rows])
        self.db.executemany(
            "INSERT INTO paths (path, content_id, size, mtime, added_at, source, captured_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def update_stat(self, path: str, size: int, mtime: float) -> None:
        self.db.execute("UPDATE paths SET size = ?, mtime = ? WHERE path = ?", (int(size), float(mtime), path))

    def delete_paths(self, paths: Sequence[str]) -> tuple[int, list[int]]:
        """Delete these paths; returns (paths deleted, content ids they pointed at)."""
        deleted, touched = 0, []
        for chunk in _chunks(list(paths)):
            marks = ",".join("?" * len(chunk))
            touched += [r[0] for r in self.db.execute(f"SELECT content_id FROM paths WHERE path IN ({marks})", chunk)]
            deleted += self.db.execute(f"DELETE FROM paths WHERE path IN ({marks})", chunk).rowcount
        return deleted, touched

    def delete_orphans(self, ids: Iterable[int]) -> list[int]:
        """Delete the contents among `ids` that no path points at any more (and their tags); log them."""
        orphans = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            marks = ",".join("?" * len(chunk))
            orphans += [
                r[0]
                for r in self.db.execute(
                    f"SELECT id FROM contents WHERE id IN ({marks}) AND NOT EXISTS "
                    "(SELECT 1 FROM paths WHERE content_id = contents.id)",
                    chunk,
                )
            ]
        for chunk in _chunks(orphans):
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM contents WHERE id IN ({marks})", chunk)
            self.db.execute(f"DELETE FROM tags WHERE content_id IN ({marks})", chunk)
        self.db.executemany("INSERT INTO removed_contents (content_id) VALUES (?)", [(i,) for i in orphans])
        return orphans

    # -- tags -------------------------------------------------------------------------------------------------
    def set_tags(self, rows: Sequence[tuple[int, str, float]], *, replace_ids: Sequence[int]) -> None:
        """The tags of `replace_ids` become `rows`' (their earlier labels are dropped)."""
        for chunk in _chunks(sorted(set(replace_ids))):
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM tags WHERE content_id IN ({marks})", chunk)
        self.add_tags(rows)

    def add_tags(self, rows: Sequence[tuple[int, str, float]]) -> None:
        """Insert (content id, label, prob) rows, keeping each content's other labels (one label: its new prob)."""
        self.db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", rows)

    def tags_of(self, content_id: int) -> list[tuple[str, float]]:
        return [
            (label, float(prob))
            for label, prob in self.db.execute(
                "SELECT label, prob FROM tags WHERE content_id = ? ORDER BY prob DESC, label", (content_id,)
            )
        ]

    def ids_with_tag(self, label: str, min_prob: float = 0.0) -> np.ndarray:
        rows = self.db.execute(
            "SELECT content_id FROM tags WHERE label = ? AND prob >= ? ORDER BY content_id", (label, min_prob)
        ).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def ids_matching(self, search_filter: SearchFilter) -> np.ndarray:
        """The sorted content ids with at least one path that passes `search_filter` (filters.py)."""
        where, args = search_filter.where()
        rows = self.db.execute(f"SELECT DISTINCT content_id FROM paths WHERE {where}", args).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ids.sort()
        return ids

    def count_matching(self, search_filter: SearchFilter, limit: int | None = None) -> int:
        """How many paths pass `search_filter`, counting at most `limit`: at least the number of images it allows
        (an image with several passing paths counts each). Counted in the filter's indexes without listing them: a
        route choice needs only the size, and past `limit` only that it is wide (bench/bench_filters.py, at 1M
        paths: listing 500k allowed ids took ~1 s, counting them 154 ms, counting to 50k ~7 ms)."""
        where, args = search_filter.where()
        bounded = "" if limit is None else f" LIMIT {int(limit)}"
        sql = f"SELECT count(*) FROM (SELECT 1 FROM paths WHERE {where}{bounded})"
        return int(self.db.execute(sql, args).fetchone()[0])

    def allowed_among(self, search_filter: SearchFilter, ids: np.ndarray) -> np.ndarray:
        """The sorted content ids among `ids` with at least one path that passes `search_filter`: the filter checked
        on a few candidates through the content index (paths_by_content), never a scan of the filter's range."""
        where, args = search_filter.where(per_row=True)
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        wanted = wanted[wanted >= 0].tolist()
        found: list[int] = []
        for chunk in _chunks(wanted, _SQL_VARS - len(args)):
            marks = ",".join("?" * len(chunk))
            found.extend(
                row[0]
                for row in self.db.execute(
                    f"SELECT DISTINCT content_id FROM paths INDEXED BY paths_by_content "
                    f"WHERE content_id IN ({marks}) AND ({where})",
                    [*chunk, *args],
                )
            )
        return np.unique(np.asarray(found, dtype=np.int64))

    def dates_for_ids(self, ids: Sequence[int]) -> dict[int, str]:
        """{content id: its latest date 'YYYY-MM-DD HH:MM:SS'} (EXIF date, else the mtime; see filters.DATE_SQL)."""
        found: dict[int, str] = {}
        for chunk in _chunks(sorted({int(i) for i in ids})):
            marks = ",".join("?" * len(chunk))
            found.update(
                self.db.execute(
                    f"SELECT content_id, max({DATE_SQL}) FROM paths WHERE content_id IN ({marks}) GROUP BY content_id",
                    chunk,
                )
            )
        return found

    def tag_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT label, count(*) FROM tags GROUP BY label ORDER BY count(*) DESC, label"))

    def first_paths(self, after: int, limit: int) -> list[tuple[int, str]]:
        """(content id, its first path) for the next `limit` contents with id > `after`, by id."""
        return self.db.execute(
            "SELECT c.id, (SELECT path FROM paths WHERE content_id = c.id ORDER BY seq LIMIT 1) "
            "FROM contents c WHERE c.id > ? ORDER BY c.id LIMIT ?",
            (after, limit),
        ).fetchall()
