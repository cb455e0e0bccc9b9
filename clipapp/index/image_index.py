"""ImageIndex: the store (system of record) plus its search structure (derived cache); thread-safe.

A change (add_items, add_alias, remove_paths, update_file_stat, set_tags) opens the store's write transaction
and is applied to the open search structure at once; `save()` commits it. Another process's commits are seen on
the next search: `PRAGMA data_version` changes, and the rows added or removed since are applied to the structure
(no rebuild, no re-encoding); after another process's compaction the vector file is reopened and the search
structure reloaded. See store.py (on disk, crash safety), structure.py (size policy, cache) and compaction.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import faiss
import numpy as np

from clipapp.errors import ClipAppError
from clipapp.index import compaction
from clipapp.index import structure as st
from clipapp.index.compaction import CompactionReport
from clipapp.index.filters import SearchFilter, SearchOptions, resolve_options
from clipapp.index.results import Hit, SearchResult
from clipapp.index.store import DB_NAME, FileInfo, ItemRecord, Store
from clipapp.index.structure import IndexSettings, IndexStructure, SearchStructure
from clipapp.vectors import normalize_rows

if sys.platform == "win32":  # pragma: no cover - no fcntl: writers of the faiss cache are simply unlocked
    fcntl = None
else:  # serialises writers of the faiss cache file
    import fcntl

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
OLD_MANIFEST_NAME = "manifest.json"  # format 1
# The cache is rewritten when this many vectors changed since it was saved: a commit of a few images costs only
# their rows (the catch-up on open applies them), and a reopen never replays more than ~1% of the collection.
CACHE_REWRITE_MIN_CHANGES = 1000
CACHE_REWRITE_FRACTION = 0.01
DEFAULT_ITER_BATCH = 65_536
# Filtered search. The paths passing the filter are counted in SQL (not listed) to choose the route. A filter passing
# more than FILTER_EXACT_MAX images and at least FILTER_OVERFETCH_MIN_FRACTION of them over-fetches
# FILTER_OVERFETCH * k / fraction unfiltered candidates and checks only those against SQL (by content id), retrying
# once with FILTER_OVERFETCH_RETRY times more for the queries left short, at most FILTER_OVERFETCH_MAX_FETCH (a fetch
# re-ranks 4x its size of stored vectors: the cap bounds those reads); the rest list the allowed ids: up to
# FILTER_EXACT_MAX are scored exactly from the vector file, more go through faiss with an IDSelector over them.
# Measured (bench/bench_filters.py, 1M x 512 IVF-PQ, p50 medians of 3 runs, docs/benchmarks.md), listing first:
# 1% (10k allowed) exact 57 ms; 10%: IDSelector 106, exact 493; 50%: IDSelector 1,390, exact 3,650 -- the listing
# itself took 7 / 163 / 1,900 ms of those. Counting, over-fetching and checking the candidates instead: 5% 14.6 ms
# (IDSelector after the listing: 47), 10% 21.8 (110), 50% 162 (1,010), same recall; 154 ms of the 50% one was
# the full count, hence FILTER_COUNT_FRACTION: then 10% 13.2 ms, 50% 12.7.
FILTER_EXACT_MAX = 50_000
FILTER_OVERFETCH_MIN_FRACTION = 0.05
FILTER_OVERFETCH = 2.0
FILTER_OVERFETCH_RETRY = 8
FILTER_OVERFETCH_MAX_FETCH = 4096
FILTER_COUNT_FRACTION = 0.05  # the count stops there: counting all 500k of a 50% filter took 154 ms, to 50k 7 ms
# A search retries this often when another process's compaction commits between its refresh and its snapshot.
SNAPSHOT_TRIES = 5


class folder_lock:
    """Exclusive advisory lock on INDEX/.lock (faiss cache writes, migration)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.handle: TextIO | None = None

    def __enter__(self):
        if fcntl is not None:
            self.handle = open(self.folder / LOCK_NAME, "a+")
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()


def index_exists(path: str | os.PathLike) -> bool:
    """An index (this format or the old manifest format) is in folder `path`."""
    folder = Path(path)
    return (folder / DB_NAME).exists() or (folder / OLD_MANIFEST_NAME).exists()


def require_index(path: str | os.PathLike) -> None:
    """A command over an existing index: a missing one is a ClipAppError saying how to build it."""
    if not index_exists(path):
        raise ClipAppError(f"No index at {path}; build one with `clipapp index FOLDER --index {path}`.")


def stored_model_spec(path: str | os.PathLike) -> str | None:
    """The model spec of the index at `path`, None if there is none (for callers choosing a model)."""
    if not index_exists(path):
        return None
    with ImageIndex.open(path) as index:
        return index.spec


def _settings_meta(settings: IndexSettings) -> str:
    return json.dumps(asdict(settings), sort_keys=True)


def _check_model(spec: str, dim: int, folder: Path, expected_spec: str | None, expected_dim: int | None) -> None:
    if (expected_spec is not None and expected_spec != spec) or (expected_dim is not None and expected_dim != dim):
        running = expected_spec if expected_spec is not None else f"a model with {expected_dim}-d embeddings"
        raise ClipAppError(
            f"The index at {folder} was built with model {spec} ({dim}-d embeddings), the app runs "
            f"model {running}; rebuild it or start the app with --model {spec}."
        )


class ImageIndex:
    """Vectors of one model, their paths and a faiss structure. Build with `create`, `open`, `open_or_create` or
    `in_memory`."""

    def __init__(self, store: Store, *, path: Path | None, temp: tempfile.TemporaryDirectory | None = None):
        self._store, self._temp = store, temp
        self.path = path
        self.spec = store.meta["model_spec"]
        self.dim = int(store.meta["embed_dim"])
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ClipAppError("An index needs the spec of the model that makes its vectors.")
        self.settings = IndexSettings(**json.loads(store.meta.get("settings", "{}")))
        self._lock = threading.RLock()
        self._search: SearchStructure | None = None
        self._cache_tried = False
        self._count = store.content_count()
        self._data_version = store.opened_data_version
        self._changed = False  # this transaction changed something
        self.last_save_seconds = 0.0
        self._advised = False  # the compaction suggestion was logged

    # -- construction -----------------------------------------------------------------------------------------
    @staticmethod
    def _settings(**settings) -> IndexSettings:
        unknown = set(settings) - set(IndexSettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown index settings {sorted(unknown)}")
        return IndexSettings(**settings)

    @classmethod
    def _new_store(cls, folder: Path, spec: str, dim: int, settings: IndexSettings) -> Store:
        if not isinstance(spec, str) or not spec.strip():
            raise ClipAppError("An index needs the spec of the model that makes its vectors.")
        if int(dim) <= 0:
            raise ClipAppError(f"Embedding dimension must be positive, not {dim}.")
        return Store(folder, create={"model_spec": spec, "embed_dim": int(dim), "settings": _settings_meta(settings)})

    @classmethod
    def in_memory(cls, spec: str, dim: int, **settings) -> ImageIndex:
        """An index with no folder of its own (save() refuses): a temporary one, removed with the object."""
        temp = tempfile.TemporaryDirectory(prefix="clipapp-index-")
        store = cls._new_store(Path(temp.name), spec, dim, cls._settings(**settings))
        return cls(store, path=None, temp=temp)

    @classmethod
    def create(cls, path: str | os.PathLike, spec: str, dim: int, **settings) -> ImageIndex:
        """A new empty index in folder `path` (created if needed). Settings: see IndexSettings."""
        folder = Path(path)
        if index_exists(folder):
            raise ClipAppError(f"An index already exists at {folder}; open it instead (or choose another folder).")
        if folder.exists() and not folder.is_dir():
            raise ClipAppError(f"{folder} is a file; an index needs a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        return cls(cls._new_store(folder, spec, dim, cls._settings(**settings)), path=folder)

    @classmethod
    def open(
        cls, path: str | os.PathLike, expected_spec: str | None = None, *, expected_dim: int | None = None
    ) -> ImageIndex:
        """Open the index at `path`, converting an index of the old manifest format once (migrate.py). With
        `expected_spec`/`expected_dim`, refuse an index made by another model: their vectors never compare."""
        from clipapp.index.migrate import migrate_if_needed

        folder = Path(path)
        migrate_if_needed(folder)
        store = Store(folder)
        try:
            _check_model(store.meta["model_spec"], int(store.meta["embed_dim"]), folder, expected_spec, expected_dim)
        except ClipAppError:
            store.close()
            raise
        return cls(store, path=folder)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, spec: str, dim: int, **settings) -> ImageIndex:
        """Open the index at `path` (refusing another model's index) or create an empty one there."""
        if index_exists(path):
            return cls.open(path, expected_spec=spec, expected_dim=dim)
        return cls.create(path, spec, dim, **settings)

    def close(self) -> None:
        """Roll back what was not saved and release the database."""
        with self._lock:
            self._store.close()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- settings ---------------------------------------------------------------------------------------------
    def set_max_memory(self, max_memory: int | None) -> None:
        """Set the memory budget of the search structure (bytes; None: no budget); committed by save()."""
        with self._lock:
            if max_memory == self.settings.max_memory:
                return
            self._begin()
            self.settings.max_memory = None if max_memory is None else int(max_memory)
            self._store.set_meta("settings", _settings_meta(self.settings))
            self._changed = True
            if self._search is not None and self._search.needs_rebuild(self._count, self.dim, self.settings):
                self._search = None

    # -- read access ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of distinct vectors (searchable images)."""
        with self._lock:
            self._refresh()
            return self._count

    @property
    def path_count(self) -> int:
        """Number of indexed paths (aliases of identical files included)."""
        with self._lock:
            return self._store.path_count()

    @property
    def generation(self) -> int:
        """Number of commits that changed the index (save() returns it)."""
        with self._lock:
            return self._store.commits()

    @property
    def structure(self) -> IndexStructure:
        """The search structure in use (loaded or built on first use)."""
        with self._lock:
            self.ensure_built()
            return self.ensure_built().structure

    @property
    def index_type(self) -> str:
        return self.structure.kind

    def record(self, path: str) -> ItemRecord | None:
        with self._lock:
            return self._store.record(path)

    def records(self) -> list[ItemRecord]:
        with self._lock:
            return list(self._store.records())

    def file_stats(self, prefix: str) -> dict[str, tuple[int, float]]:
        """{path: (size, mtime)} of the indexed files under `prefix` (sync_folder's no-change check)."""
        with self._lock:
            return self._store.file_stats(prefix)

    def id_for_hash(self, sha256: str) -> int | None:
        with self._lock:
            return self._store.id_for_hash(sha256)

    def ids(self) -> np.ndarray:
        with self._lock:
            return self._store.content_ids()

    def vectors(self) -> np.ndarray:
        """Copy of all stored vectors, row order = `ids()` (small indexes; see iter_vectors for big ones)."""
        with self._lock:
            return self._store.vectors_for(self._store.content_ids())

    def vector(self, item_id: int) -> np.ndarray | None:
        with self._lock:
            if self._store.db.execute("SELECT 1 FROM contents WHERE id = ?", (int(item_id),)).fetchone() is None:
                return None
            return self._store.vectors_for(np.asarray([item_id]))[0]

    def vector_for_path(self, path: str) -> np.ndarray | None:
        """The stored vector of an indexed path (image -> image search without re-encoding)."""
        record = self.record(path)
        return None if record is None else self.vector(record.id)

    def iter_vectors(
        self, batch_rows: int = DEFAULT_ITER_BATCH, *, every_path: bool = False
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(paths, float32 (len(paths), dim) vectors) per batch of at most `batch_rows` distinct images, by id;
        each image's path is its first (display) path, or with `every_path` each of its paths gets a row (copies
        of one file repeat its vector: `classify --index` predicts every indexed path). Memory: one batch."""
        if int(batch_rows) < 1:
            raise ClipAppError(f"batch_rows must be at least 1, not {batch_rows}.")
        after = -1
        while True:
            with self._lock:
                rows = self._store.first_paths(after, int(batch_rows))
                if not rows:
                    return
                ids = np.asarray([r[0] for r in rows], dtype=np.int64)
                vectors = self._store.vectors_for(ids)
                if every_path:
                    paths_of = self._store.paths_for_ids(ids.tolist())
                    repeat = [len(paths_of.get(int(i), ())) for i in ids]
                    paths = [p for i in ids for p in paths_of.get(int(i), ())]
                    vectors = np.repeat(vectors, repeat, axis=0)
                else:
                    paths = [r[1] for r in rows]
            after = int(ids[-1])
            yield paths, vectors

    def records_for_ids(self, ids: Sequence[int]) -> list[ItemRecord]:
        """Every indexed path of the content `ids` (aliases included), in insertion order."""
        with self._lock:
            return self._store.records_for_ids(ids)

    def paths_for_ids(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """{content id: [its paths, first (display) path first]} for the ids that have paths."""
        with self._lock:
            return self._store.paths_for_ids(ids)

    def shared_content_ids(self) -> np.ndarray:
        """Content ids indexed under more than one path (byte-identical copies)."""
        with self._lock:
            return self._store.shared_content_ids()

    def neighbours(self, ids: np.ndarray, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), (len(ids), k), best first: the k nearest stored images of each stored image in `ids`,
        queried with its stored vector through the search structure (itself among them). `nprobe`: lists probed
        by an IVF structure (None: the calibrated value). For duplicates.py: all images against the index."""
        with self._lock:
            self._refresh()
            queries = self._store.vectors_for(np.asarray(ids, dtype=np.int64))
            search = self.ensure_built()
            with st.faiss_threads(1 if len(queries) < st.SINGLE_THREAD_BELOW else None):
                return search.search(queries, min(int(k), self._count), self._store.vectors_for, nprobe=nprobe)

    def display_paths(self, batch_rows: int = DEFAULT_ITER_BATCH) -> list[str]:
        """Every image's first (display) path, by id: the row order of `iter_vectors` (reads no vector)."""
        out: list[str] = []
        after = -1
        while True:
            with self._lock:
                rows = self._store.first_paths(after, int(batch_rows))
            if not rows:
                return out
            out += [r[1] for r in rows]
            after = int(rows[-1][0])

    def tags(self, path: str) -> list[tuple[str, float]]:
        """The (label, prob) tags of an indexed image, highest prob first ([] if none)."""
        with self._lock:
            record = self._store.record(path)
            return [] if record is None else self._store.tags_of(record.id)

    def tag_counts(self) -> dict[str, int]:
        """{label: images tagged with it}, most frequent first."""
        with self._lock:
            return self._store.tag_counts()

    def memory_bytes(self) -> dict[str, int]:
        """Approximate resident bytes of the search structure (stored vectors stay on disk)."""
        with self._lock:
            n, s = self._count, (self._search.structure if self._search else IndexStructure())
            per_vector = {"flat": 4 * self.dim + 8, "ivf": 4 * self.dim + 8, "ivfpq": s.pq_m + 8}[s.kind]
            faiss_bytes = n * per_vector + (s.nlist * 4 * self.dim if s.kind != "flat" else 0)
            if s.kind == "ivfpq":
                faiss_bytes += 256 * 4 * self.dim  # PQ centroids
            return {"vectors": 0, "faiss": int(faiss_bytes)}

    # -- keeping up with the store ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Apply other processes' commits (cheap when there are none: one PRAGMA)."""
        version = self._store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._count = self._store.content_count()
            self.settings = IndexSettings(**json.loads(self._store.get_meta("settings") or "{}"))
            if self._store.read_vector_epoch() != self._store.vector_epoch:
                # Another process compacted: new ids, new file. Reload the (renumbered) cache it saved.
                self._store.reopen_vectors()
                self._search, self._cache_tried = None, False
            self._catch_up()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Up to date, then inside one read snapshot of the store whose `vector_epoch` is that of the open vector
        file and search structure: the ids a search finds and the paths looked up for them then belong together
        even when another process compacts meanwhile (its commit is not seen until the snapshot ends). A
        compaction committed between the refresh and the snapshot is followed and the snapshot taken again."""
        for _ in range(SNAPSHOT_TRIES):
            self._refresh()  # outside the snapshot: it may reopen the vector file of a newer epoch
            with self._store.read_snapshot() as epoch:
                if epoch == self._store.vector_epoch:
                    self._refresh()  # the commits made since the first refresh, read from the snapshot
                    yield
                    return
        raise ClipAppError(
            f"The index at {self.path} was compacted {SNAPSHOT_TRIES} times during one search; try again."
        )

    def _catch_up(self) -> None:
        """Bring the search structure up to the store: add rows past what it covers, remove the removed ones."""
        built = self._search
        if built is None:
            return
        if built.needs_rebuild(self._count, self.dim, self.settings):
            self._search = None  # rebuilt on the next search, from the store
            return
        store = self._store
        new_ids = store.content_ids(after=built.next_id - 1)
        built.remove(store.removed_since(built.removal_seq, below=built.next_id))
        for start in range(0, len(new_ids), st.ADD_CHUNK):
            chunk = new_ids[start : start + st.ADD_CHUNK]
            built.add(store.vectors_for(chunk), chunk)
        built.next_id, built.removal_seq = store.next_id(), store.removal_seq()
        if built.ntotal != self._count:
            log.warning(
                "search index of %s holds %d vectors, the database %d; rebuilding it",
                self.path,
                built.ntotal,
                self._count,
            )
            self._search = None

    def _begin(self) -> None:
        if self._store.begin():
            self._changed = False
            self._refresh()  # commits made by others before we got the write lock

    def _after_change(self) -> None:
        self._changed = True
        self._catch_up()

    # -- mutation ---------------------------------------------------------------------------------------------
    def add_items(self, vectors: np.ndarray, infos: Sequence[FileInfo]) -> list[int]:
        """Index `infos[i]` with embedding `vectors[i]`; returns the id each path now points at.

        A path already indexed is replaced. Content (sha256) already indexed, by another path or earlier in the
        batch, becomes an alias of the existing vector and its row in `vectors` is ignored.
        """
        vectors = normalize_rows(vectors, what="image embedding") if len(infos) else np.zeros((0, self.dim))
        if vectors.shape != (len(infos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(infos)}, {self.dim}), got {vectors.shape}")
        if not len(infos):
            return []
        with self._lock:
            self._begin()
            known = self._ids_for_hashes([info.sha256 for info in infos])
            new_rows: list[int] = []
            new_hashes: list[str] = []
            for row, info in enumerate(infos):
                if info.sha256 not in known:
                    known[info.sha256] = -1 - len(new_rows)  # placeholder: the k-th new content
                    new_rows.append(row)
                    new_hashes.append(info.sha256)
            fresh = vectors if len(new_rows) == len(infos) else vectors[new_rows]
            new_ids = self._store.add_contents(new_hashes, fresh, now=time.time())
            self._count += len(new_ids)
            ids = [new_ids[-1 - i] if i < 0 else i for i in (known[info.sha256] for info in infos)]
            self._set_paths(infos, ids)
            self._after_change()
            return ids

    def _ids_for_hashes(self, hashes: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self._store.db.execute(f"SELECT sha256, id FROM contents WHERE sha256 IN ({marks})", chunk))
        return found

    def _set_paths(self, infos: Sequence[FileInfo], ids: Sequence[int]) -> None:
        now = time.time()
        _, previous = self._store.delete_paths([info.path for info in infos])
        self._store.put_paths(
            (info.path, int(item_id), int(info.size), float(info.mtime), now, info.source, info.captured_at)
            for info, item_id in zip(infos, ids, strict=True)
        )
        # Checked after all inserts: a path re-added with its old content keeps its vector.
        self._count -= len(self._store.delete_orphans(previous))

    def add_alias(self, info: FileInfo) -> int | None:
        """Record `info.path` as another path of already-indexed content; None if that content is unknown."""
        with self._lock:
            item_id = self._store.id_for_hash(info.sha256)
            if item_id is not None:
                self._begin()
                self._set_paths([info], [item_id])
                self._after_change()
            return item_id

    def update_file_stat(self, path: str, *, size: int, mtime: float) -> None:
        """A file touched but not changed: remember its new size/mtime so the next sync need not hash it."""
        with self._lock:
            self._begin()
            self._store.update_stat(path, size, mtime)
            self._changed = True

    def remove_paths(self, paths: Iterable[str]) -> int:
        """Forget these paths; a vector no path points at any more is removed too. Returns paths removed."""
        paths = list(dict.fromkeys(paths))
        if not paths:
            return 0
        with self._lock:
            self._begin()
            deleted, touched = self._store.delete_paths(paths)
            self._count -= len(self._store.delete_orphans(touched))
            if deleted:
                self._after_change()
            return deleted

    def set_tags(self, tags: Mapping[str, Sequence[tuple[str, float]]]) -> int:
        """Replace the tags of each given image: {path: [(label, prob), ...]} ([] clears them).

        Tags belong to the content, so aliases of an image share them. Committed by save(). Returns the number of
        images tagged; an unknown path is an error (nothing is changed then).
        """
        with self._lock:
            rows, ids = [], []
            for path, labels in tags.items():
                record = self._store.record(path)
                if record is None:
                    raise ClipAppError(f"Cannot tag {path}: it is not in the index.")
                ids.append(record.id)
                for label, prob in labels:
                    if not isinstance(label, str) or not label.strip():
                        raise ClipAppError(f"A tag of {path} has no label.")
                    rows.append((record.id, label, float(prob)))
            self._begin()
            self._store.set_tags(rows, replace_ids=ids)
            self._changed = True
            return len(ids)

    def add_tag(self, paths: Sequence[str], label: str, prob: float = 1.0) -> int:
        """Give every image of `paths` the tag `label` (with probability `prob`), keeping its other tags: a hand-made
        selection (the map's "Tag these", `clipapp tag`), filtered on like `classify --tag`'s labels. Committed by
        save(). Returns the number of images tagged (aliases are one image); an unknown path is an error (nothing
        is changed then)."""
        if not isinstance(label, str) or not label.strip():
            raise ClipAppError("The tag has no label.")
        with self._lock:
            ids = set()
            for path in paths:
                record = self._store.record(path)
                if record is None:
                    raise ClipAppError(f"Cannot tag {path}: it is not in the index.")
                ids.add(record.id)
            self._begin()
            self._store.add_tags([(i, label, float(prob)) for i in sorted(ids)])
            self._changed = True
            return len(ids)

    # -- search structure -------------------------------------------------------------------------------------
    def ensure_built(self, progress=None) -> SearchStructure:
        """Load the saved structure (catching up with the store) or build it if the policy says so; returns it."""
        with self._lock:
            self._refresh()
            if self._search is None and not self._cache_tried and self.path is not None:
                self._cache_tried = True
                self._search = st.load_cache(self.path, self._store.vector_epoch)
                self._catch_up()
            search = self._search
            if search is None or search.needs_rebuild(self._count, self.dim, self.settings):
                search = self._rebuild(progress)
            self._maybe_save_cache()
            return search

    def rebuild(self, progress=None) -> None:
        """Force a rebuild from the stored vectors (retrains and recalibrates an IVF index)."""
        with self._lock:
            self._refresh()
            self._rebuild(progress)
            self._maybe_save_cache()

    def _rebuild(self, progress=None) -> SearchStructure:
        started = time.perf_counter()
        store = self._store
        ids = store.content_ids()
        search = self._search = st.build(
            len(ids),
            self.dim,
            self.settings,
            ids,
            store.vectors_for,
            next_id=store.next_id(),
            removal_seq=store.removal_seq(),
            vector_epoch=store.vector_epoch,
            progress=progress,
        )
        log.info(
            "built %s index over %d vectors in %.1fs %s",
            search.structure.kind,
            len(ids),
            time.perf_counter() - started,
            search.structure,
        )
        return search

    def _maybe_save_cache(self) -> None:
        built = self._search
        if built is None or self.path is None or self._store.in_transaction:
            return  # never a cache that covers uncommitted rows
        if built.saved_ntotal >= 0 and built.changes < max(
            CACHE_REWRITE_MIN_CHANGES, CACHE_REWRITE_FRACTION * built.ntotal
        ):
            return
        with folder_lock(self.path):
            st.save_cache(self.path, built)

    # -- search -----------------------------------------------------------------------------------------------
    def search(
        self,
        query_vectors: np.ndarray,
        k: int = 10,
        threshold: float | None = None,
        *,
        tag: str | None = None,
        filter: SearchFilter | None = None,
        sort: str = "relevance",
        options: SearchOptions | None = None,
    ) -> list[SearchResult]:
        """Nearest images by cosine similarity, one `SearchResult` per query row (a (d,) vector is one query).

        Its hits (`Hit`: id, path, score, aliases) are best first; at most `k`, fewer if the index is smaller or
        if `threshold` (minimum score) cuts them. `filter` (filters.SearchFilter: date range, folder, tag) limits
        the images searched; `tag` is a shorthand for a tag filter. `sort="date"` reorders the hits that passed
        (the top k by relevance, above `threshold`) newest first. Query rows are L2-normalized here. `options`
        (filters.SearchOptions) carries all of these in one checked record, in place of the keywords.
        """
        chosen = resolve_options(options, k=k, threshold=threshold, tag=tag, filter=filter, sort=sort)
        k, threshold, search_filter, sort = chosen.k, chosen.min_score, chosen.filter, chosen.sort
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ClipAppError(
                f"Query vectors have shape {tuple(np.shape(query_vectors))}; this index holds "
                f"{self.dim}-d vectors of model {self.spec}."
            )
        if len(queries) == 0:
            return []
        queries = normalize_rows(queries, what="query vector")
        with self._lock, self._snapshot():  # the ids searched and the paths looked up are of one epoch
            k = min(int(k), self._count)
            if k == 0:
                return [SearchResult() for _ in range(len(queries))]
            if search_filter.empty:
                scores, ids = self._search_ids(queries, k)
            else:
                scores, ids = self._search_filtered(queries, k, search_filter)
            hit_ids = ids[ids >= 0]
            paths = self._store.paths_for_ids(hit_ids.tolist()) if len(hit_ids) else {}
            dates = self._store.dates_for_ids(hit_ids.tolist()) if sort == "date" and len(hit_ids) else None
        results = [
            self._hits(row_scores, row_ids, threshold, paths) for row_scores, row_ids in zip(scores, ids, strict=True)
        ]
        if dates is not None:
            # newest first; ties (and images without a date) keep their relevance order
            results = [
                SearchResult(tuple(sorted(r.hits, key=lambda hit: dates.get(hit.id) or "", reverse=True)))
                for r in results
            ]
        return results

    def _search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        store = self._store
        threads = 1 if len(queries) < st.SINGLE_THREAD_BELOW else None
        search = self.ensure_built()
        with st.faiss_threads(threads):
            scores, ids = search.search(queries, k, store.vectors_for)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short) and search.structure.kind != "flat":
            # The probed lists held fewer than k vectors (large k): answer those queries exactly instead.
            scores[short], ids[short] = st.exact_over_ids(store.content_ids(), queries[short], k, store.vectors_for)
        return scores, ids

    def _search_filtered(
        self, queries: np.ndarray, k: int, search_filter: SearchFilter
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k among the images `search_filter` allows, by the cheapest way for its size (FILTER_* above): the
        allowed paths are counted, not listed, to choose; a wide filter checks only the over-fetched candidates."""
        store = self._store
        # paths, at least the images allowed; counted up to where the filter is surely wide (past it the fraction is
        # a lower bound: the fetch errs on the large side)
        wide_from = max(self._exact_max(), int(np.ceil(FILTER_COUNT_FRACTION * self._count))) + 1
        passing = store.count_matching(search_filter, limit=wide_from)
        fraction = min(1.0, passing / max(1, self._count))
        fetch = int(np.ceil(FILTER_OVERFETCH * k / max(fraction, 1e-9)))
        wide = passing > self._exact_max() and fraction >= FILTER_OVERFETCH_MIN_FRACTION
        if not wide or fetch > FILTER_OVERFETCH_MAX_FETCH:
            return self._search_prefiltered(queries, k, store.ids_matching(search_filter))
        scores, ids = self._search_overfetched(queries, k, search_filter, fetch)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):  # fewer than k allowed images among the candidates: the allowed ones, listed
            scores[short], ids[short] = self._search_prefiltered(queries[short], k, store.ids_matching(search_filter))
        return scores, ids

    def _exact_max(self) -> int:
        return max(FILTER_EXACT_MAX, self.settings.exact_threshold)

    def _search_overfetched(
        self, queries: np.ndarray, k: int, search_filter: SearchFilter, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top `fetch` unfiltered candidates of each query, the allowed ones (checked in SQL) first in score
        order, cut to k; -1 where fewer than k passed (after one retry fetching FILTER_OVERFETCH_RETRY times more)."""
        search = self.ensure_built()
        threads = 1 if len(queries) < st.SINGLE_THREAD_BELOW else None
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        for _ in range(2):
            fetch = min(self._count, fetch)
            with st.faiss_threads(threads):
                found_scores, found = search.search(queries[todo], fetch, self._store.vectors_for)
            keep = np.isin(found, self._store.allowed_among(search_filter, found)) & (found >= 0)
            order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # allowed first, in score order
            found_scores = np.take_along_axis(np.where(keep, found_scores, -np.inf), order, axis=1)
            found = np.take_along_axis(found, order, axis=1)
            found[~np.isfinite(found_scores)] = -1
            scores[todo], ids[todo] = found_scores, found  # k columns: k <= fetch <= count
            todo = todo[(ids[todo] < 0).any(axis=1)]
            if not len(todo) or fetch >= min(self._count, FILTER_OVERFETCH_MAX_FETCH):
                break
            fetch = min(fetch * FILTER_OVERFETCH_RETRY, FILTER_OVERFETCH_MAX_FETCH)
        return scores, ids

    def _search_prefiltered(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top k among `allowed` (sorted content ids): exact over their vectors when few, else faiss with an
        IDSelector (exact for the queries whose probed lists held fewer than k allowed images)."""
        store = self._store
        if len(allowed) <= self._exact_max():
            # few allowed images: read their vectors and score them all, no structure needed (exact)
            return st.exact_over_ids(allowed, queries, k, store.vectors_for)
        search = self.ensure_built()
        threads = 1 if len(queries) < st.SINGLE_THREAD_BELOW else None
        with st.faiss_threads(threads):
            scores, ids = search.search(queries, k, store.vectors_for, selector=faiss.IDSelectorBatch(allowed))
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):
            scores[short], ids[short] = st.exact_over_ids(allowed, queries[short], k, store.vectors_for)
        return scores, ids

    @staticmethod
    def _hits(
        scores: np.ndarray, ids: np.ndarray, threshold: float | None, paths: dict[int, list[str]]
    ) -> SearchResult:
        hits = []
        for score, item_id in zip(scores.tolist(), ids.tolist(), strict=True):
            if item_id < 0 or (threshold is not None and score < threshold):
                continue
            item_paths = paths.get(item_id)
            if item_paths:
                hits.append(Hit(id=item_id, path=item_paths[0], score=score, aliases=tuple(item_paths[1:])))
        return SearchResult(tuple(hits))

    # -- compaction -------------------------------------------------------------------------------------------
    def compaction_advice(self) -> str | None:
        """A sentence suggesting `--compact` when removed images hold a large share of the vector file."""
        with self._lock:
            self._refresh()
            return compaction.compaction_advice(self._store, self._count)

    def compact(self, progress=None) -> CompactionReport:
        """Rewrite the vector file without the rows of removed images (crash-safe, see compaction.py); the search
        structure and its saved cache follow without retraining. Other writers wait for it; a process that has
        the index open reopens the new file on its next call."""
        if self.path is None:
            raise ClipAppError("This index is in memory only; there is no vector file to compact.")
        with self._lock:
            if self._store.in_transaction:
                raise ClipAppError("The index has unsaved changes; save them before compacting.")
            self._begin()  # the write lock, and the commits of others applied to the structure
            if self._search is None and not self._cache_tried:
                self._cache_tried = True
                self._search = st.load_cache(self.path, self._store.vector_epoch)
                self._catch_up()
            report, old_ids = compaction.compact_store(self._store, progress)
            self._changed = False
            self._follow_compaction(old_ids)
            return report

    def _follow_compaction(self, old_ids: np.ndarray) -> None:
        """Renumber the search structure's ids as the compaction did and save it; or drop the saved cache."""
        store, search = self._store, self._search
        if search is not None and search.ntotal == len(old_ids) and search.remap_ids(old_ids):
            search.next_id, search.removal_seq = store.next_id(), store.removal_seq()
            search.vector_epoch, search.saved_ntotal = store.vector_epoch, -1
            self._maybe_save_cache()
            return
        self._search = None
        assert self.path is not None
        with folder_lock(self.path):
            st.remove_cache(self.path)

    # -- commit -----------------------------------------------------------------------------------------------
    def save(self) -> int:
        """Commit the changes made since the last save (one SQLite transaction; the search cache is rewritten
        only when enough changed, see CACHE_REWRITE_*). Returns the commit number; a no-op if nothing changed."""
        if self.path is None:
            raise ClipAppError("This index is in memory only; give it a folder to save it.")
        started = time.perf_counter()
        with self._lock:
            committed = self._store.in_transaction and self._changed
            if self._store.in_transaction:
                if self._changed:
                    self._store.commit()
                else:
                    self._store.rollback()
                self._changed = False
                # Not re-reading PRAGMA data_version here: our own commit does not change it, and a commit by
                # another process right after ours must still be seen by the next _refresh.
            self._maybe_save_cache()
            self.last_save_seconds = time.perf_counter() - started
            if committed and not self._advised:  # once per process: a sync commits every batch
                advice = compaction.compaction_advice(self._store, self._count)
                if advice is not None:
                    self._advised = True
                    log.warning("%s", advice)
            return self._store.commits()

    def describe(self) -> dict:
        """Summary for the UI/CLI."""
        structure = self.structure
        return {
            "path": str(self.path) if self.path else None,
            "model": self.spec,
            "dim": self.dim,
            "images": len(self),
            "paths": self.path_count,
            "generation": self.generation,
            **asdict(structure),
        }
