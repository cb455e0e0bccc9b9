"""A persisted, incremental image-collection index on faiss: add / remove / search / save / open / sync a folder.

Core module: no Gradio, no CLIP service. Embeddings come from a duck-typed `encoder` with `spec`, `embed_dim`,
`encode_image_files(paths, batch_size=)`, `encode_images(images)`, `encode_texts(texts)` and
`text_embeddings(labels, templates)` (see `clipapp.service.ClipService`).

What is stored
--------------
* One vector per distinct *content* (sha256 of the file bytes). Several paths with identical bytes are aliases of
  the same vector: the second copy is never encoded. A search returns one hit per vector; its `path` is the
  first path recorded for that content (still present) and `aliases` lists the other paths, so k hits are k
  different images rather than the same picture k times.
* Per path an `ItemRecord`: id (of its vector), path, size, mtime, sha256, added_at, source ("file" for files
  found by `sync_folder`, "upload" for images given to `add_images`, which are stored under their given name).
* The raw float32 vectors (row order = increasing id) beside the faiss index, so the faiss structure can be rebuilt
  (exact <-> IVF, retraining) without re-encoding and results can be re-ranked or completed exactly.

Search structure (inner product on L2-normalized float32 = cosine)
------------------------------------------------------------------
* Below `exact_threshold` vectors (default 50,000): exact search, `IndexIDMap2(IndexFlatIP)`.
* From there on: `IndexIVFFlat` with nlist = 4*sqrt(n), capped at `max_nlist` (default 1024: k-means time grows as
  nlist^2, and 1024 lists already answer a query in ~1.2 ms at 1M vectors) and at n/39 (faiss' minimum of training
  points per centroid), trained on up to 50 points per list, and the smallest nprobe whose recall@10 against exact
  search, measured at build time on 500 of the index's own vectors used as queries (leave-one-out: each query's own
  vector is dropped from both result lists), reaches `target_recall` + 0.02 (self-queries read ~0.01 high, plus
  sampling error). IVF rather than HNSW: it supports removal by id (HNSW cannot delete) and cheap incremental adds,
  and measured better here: at 100k x 512 on 2 cores HNSW (M=32) took 20 s to build and 0.49 ms per query for
  recall@10 0.97, IVF 12 s and 0.24 ms for 0.97.
* Queries with fewer than 8 rows run on one faiss thread: on a busy 2-core machine a second OpenMP thread costs a
  scheduler tick per query (measured 24 ms instead of 0.6 ms for an exact search over 10k vectors).
* Rebuilt lazily (on the next search or save) when the collection crosses the threshold, when an IVF index has
  doubled since it was trained (its nlist and nprobe are stale), or has shrunk below half the threshold.

On disk (`save`, crash-safe)
----------------------------
    manifest.json            model spec, embedding dim, format version, counts, index type and parameters, and
                             the exact data files of this generation (with their sizes)
    vectors-<gen>.npy        raw vectors (n, dim) float32, row order = ids
    ids-<gen>.npy            int64 ids of those rows (increasing)
    meta-<gen>.json          path records and the next free id
    faiss-<gen>.index        faiss.write_index of the search structure
Every file is written to a temporary name in the same folder, fsynced and renamed; data files carry the number of
the generation that wrote them, so a save never touches a file the committed manifest refers to. The manifest is
renamed into place last: that rename is the commit. A process killed at any moment leaves the previous manifest
and all its files intact; the next successful save deletes temp files and files no manifest refers to. A component
that did not change since the last save (e.g. only metadata changed) is not rewritten: the new manifest refers to
the older file. Metadata is JSON, not SQLite: it must be snapshotted together with the vectors and the faiss file
under the same generation/commit scheme (SQLite commits on its own and would need a copy per generation anyway), it
is a few hundred bytes per image, loads in well under a second for 100k images, and is readable by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

import faiss
import numpy as np

from clipapp.data import IMAGE_EXTENSIONS, list_image_files
from clipapp.errors import ClipAppError
from clipapp.storage import atomic_path, file_sha256, write_json_atomic

try:  # serialises concurrent savers of one index folder; absent on Windows, where saves are simply unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

FORMAT_NAME = "clipapp-image-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
DEFAULT_EXACT_THRESHOLD = 50_000
DEFAULT_TARGET_RECALL = 0.95
CALIBRATION_QUERIES = 500
CALIBRATION_K = 10
# Self-queries read recall ~0.01 higher than fresh queries of the same distribution (measured at 100k x 512 on the
# benchmark's clustered data, at every nprobe), and 500 queries x 10 neighbours measure it to +-0.003: calibrate to
# target + 0.02 so fresh queries still reach the target.
RECALL_MARGIN = 0.02
MIN_POINTS_PER_CENTROID = 39  # below this faiss warns that k-means is poorly trained
TRAIN_POINTS_PER_CENTROID = 50
KMEANS_ITERATIONS = 10  # IVF centroids only need to partition the space; 10 iterations, then nprobe is calibrated
# k-means costs ~ nlist^2. At 1M x 512 on 2 cores (measured): 1000 lists train+fill in 23 s and answer a query in
# 1.4 ms; 2000 lists take 76 s (0.3 ms); 4*sqrt(n) = 4000 would take ~4 min. 5 ms is the latency goal.
DEFAULT_MAX_NLIST = 1024
# Fewer queries than this run on one faiss thread (see _faiss_threads).
SINGLE_THREAD_BELOW = 8

_DATA_FILE = re.compile(r"^(vectors|ids|meta|faiss)-(\d+)\.(npy|json|index)$")

ProgressFn = Callable[[int, int, str], None]


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileInfo:
    """What we know about one image before it has an id: where it is and what its content hash is."""

    path: str
    size: int
    mtime: float
    sha256: str
    source: str = "file"  # "file": found by sync_folder, removed when it disappears; "upload": add_images


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


@dataclass
class IndexStructure:
    """How the faiss index is built; persisted in the manifest so a reopened index searches the same way."""

    kind: str = "flat"  # "flat" (exact) or "ivf"
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0  # vectors in the index when the IVF was trained
    measured_recall: Optional[float] = None  # recall@10 vs exact at nprobe, measured at build time


@dataclass
class IndexSettings:
    """Persisted with the index, so a reopened index keeps the policy it was created with."""

    exact_threshold: int = DEFAULT_EXACT_THRESHOLD  # below: exact search; from here on: IVF
    target_recall: float = DEFAULT_TARGET_RECALL  # recall@10 the IVF nprobe is calibrated for
    max_nlist: int = DEFAULT_MAX_NLIST  # cap on 4*sqrt(n) IVF lists (training time grows as nlist^2)


class Encoder(Protocol):
    spec: str
    embed_dim: int

    def encode_image_files(
        self, paths: list[str], *, batch_size: int = 32
    ) -> Iterator[tuple[str, Optional[np.ndarray], Optional[str]]]: ...

    def encode_images(self, images: list) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def text_embeddings(self, labels: Sequence[str], templates: Any) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------------------------
# Vector helpers
# ---------------------------------------------------------------------------------------------------------------
def normalize_rows(vectors: np.ndarray, *, what: str = "vector") -> np.ndarray:
    """float32 C-contiguous copy with unit rows; a zero or non-finite row is an error (it has no direction)."""
    array = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if not np.all(np.isfinite(array)):
        raise ClipAppError(f"A {what} contains NaN or infinite values.")
    norms = np.sqrt(np.einsum("ij,ij->i", array, array))[:, None]  # no (n, d) temporary, unlike linalg.norm
    if np.any(norms < 1e-12):
        raise ClipAppError(f"A {what} is all zeros and has no direction to search for.")
    array /= norms  # in place: for a bulk add this array is the index's own copy, possibly gigabytes
    return np.ascontiguousarray(array)


def exact_top_k(database: np.ndarray, queries: np.ndarray, k: int, *, block_bytes: int = 64 << 20
                ) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: (scores, row numbers), each (q, min(k, n)), best first.

    Processed in blocks of database rows so the (q, block) score matrix stays under `block_bytes`.
    """
    n, q = len(database), len(queries)
    k = min(k, n)
    best_scores = np.full((q, k), -np.inf, dtype=np.float32)
    best_rows = np.full((q, k), -1, dtype=np.int64)
    if k == 0:
        return best_scores, best_rows
    block = max(k, block_bytes // (4 * max(q, 1)))
    for start in range(0, n, block):
        scores = queries @ database[start:start + block].T
        kk = min(k, scores.shape[1])
        # argpartition for the largest directly: negating the block first would double the time.
        part = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, -kk:]
        all_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        all_rows = np.concatenate([best_rows, part + start], axis=1)
        keep = np.argpartition(all_scores, all_scores.shape[1] - k, axis=1)[:, -k:]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_rows = np.take_along_axis(all_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


def ivf_nlist_for(count: int, *, max_nlist: int = DEFAULT_MAX_NLIST) -> int:
    """4*sqrt(n) lists, at most `max_nlist`, and never fewer than MIN_POINTS_PER_CENTROID vectors per list."""
    return max(1, min(int(round(4 * math.sqrt(count))), max_nlist, count // MIN_POINTS_PER_CENTROID))


@contextmanager
def _faiss_threads(count: Optional[int]) -> Iterator[None]:
    """Run faiss calls in this block on `count` OpenMP threads (None: unchanged).

    A single query is too little work to share: on a busy 2-core machine, waking a second OpenMP thread for an
    exact search over 10k vectors cost a scheduler tick, 24 ms instead of 0.6 ms. OpenMP thread counts are
    per calling thread, so this does not affect searches or builds running in other threads.
    """
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------------------------
class ImageIndex:
    """Vectors of one model, their paths and a faiss structure; thread-safe. Build with `create`, `open`,
    `open_or_create` or `in_memory`. See the module docstring for the design."""

    def __init__(self, *, path: Optional[str | os.PathLike], spec: str, dim: int,
                 settings: Optional[IndexSettings] = None):
        if not isinstance(spec, str) or not spec.strip():
            raise ClipAppError("An index needs the spec of the model that makes its vectors.")
        if int(dim) <= 0:
            raise ClipAppError(f"Embedding dimension must be positive, not {dim}.")
        self.path: Optional[Path] = Path(path) if path is not None else None
        self.spec = spec
        self.dim = int(dim)
        self.settings = settings or IndexSettings()
        self.generation = 0
        self.structure = IndexStructure()
        self._lock = threading.RLock()
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)  # capacity buffer; rows [:_count] are live
        self._ids = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._next_id = 0
        self._records: dict[str, ItemRecord] = {}
        self._paths_by_id: dict[int, list[str]] = {}
        self._id_by_hash: dict[str, int] = {}
        self._faiss: Optional[faiss.Index] = None  # None: must be (re)built before the next search or save
        self._files: dict[str, str] = {}  # component -> file name in the committed manifest
        self._dirty = {"vectors": True, "meta": True, "faiss": True}
        self.last_save_seconds = 0.0  # duration of the last save that wrote something

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def in_memory(cls, spec: str, dim: int, *, exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
                  target_recall: float = DEFAULT_TARGET_RECALL, max_nlist: int = DEFAULT_MAX_NLIST) -> "ImageIndex":
        """An index with no folder (save() refuses); for sessions that need no persistence, tests, benchmarks."""
        return cls(path=None, spec=spec, dim=dim, settings=IndexSettings(exact_threshold, target_recall, max_nlist))

    @classmethod
    def create(cls, path: str | os.PathLike, spec: str, dim: int, *,
               exact_threshold: int = DEFAULT_EXACT_THRESHOLD, target_recall: float = DEFAULT_TARGET_RECALL,
               max_nlist: int = DEFAULT_MAX_NLIST) -> "ImageIndex":
        """A new empty index in folder `path` (created if needed), saved at once so it can be opened."""
        folder = Path(path)
        if (folder / MANIFEST_NAME).exists():
            raise ClipAppError(f"An index already exists at {folder}; open it instead (or choose another folder).")
        if folder.exists() and not folder.is_dir():
            raise ClipAppError(f"{folder} is a file; an index needs a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        index = cls(path=folder, spec=spec, dim=dim, settings=IndexSettings(exact_threshold, target_recall, max_nlist))
        index.save()
        return index

    @classmethod
    def open(cls, path: str | os.PathLike, expected_spec: Optional[str] = None, *,
             expected_dim: Optional[int] = None) -> "ImageIndex":
        """Load the last committed generation. With `expected_spec`/`expected_dim`, refuse an index made by
        another model: vectors of two models are never comparable."""
        folder = Path(path)
        for attempt in range(3):
            manifest = read_manifest(folder)
            _check_model(manifest, folder, expected_spec, expected_dim)
            try:
                return cls._load(folder, manifest)
            except FileNotFoundError as exc:
                # A concurrent save may have committed a newer generation and deleted this one's files.
                if read_manifest(folder).get("generation") != manifest.get("generation") and attempt < 2:
                    continue
                raise ClipAppError(f"The index at {folder} is damaged: {exc.filename} is missing. "
                                   "Rebuild it (delete the folder and index the images again).") from exc
        raise AssertionError("unreachable")

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, spec: str, dim: int, **settings: Any) -> "ImageIndex":
        """Open the index at `path` (refusing another model's index) or create an empty one there."""
        if (Path(path) / MANIFEST_NAME).exists():
            return cls.open(path, expected_spec=spec, expected_dim=dim)
        return cls.create(path, spec, dim, **settings)

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> "ImageIndex":
        files, count = manifest["files"], manifest["count"]
        settings = IndexSettings(**manifest.get("settings", {}))
        index = cls(path=folder, spec=manifest["model_spec"], dim=manifest["embed_dim"], settings=settings)

        def damaged(problem: str) -> ClipAppError:
            return ClipAppError(f"The index at {folder} is damaged ({problem}). Rebuild it: delete the folder and "
                                "index the images again.")

        # Cheap check first: a truncated or swapped file shows up as a size the manifest did not commit.
        for key, size in manifest.get("file_sizes", {}).items():
            actual = (folder / files[key]).stat().st_size
            if actual != size:
                raise damaged(f"{files[key]} has {actual} bytes, the manifest says {size}")
        try:
            vectors = np.load(folder / files["vectors"], allow_pickle=False)
            ids = np.load(folder / files["ids"], allow_pickle=False).astype(np.int64)
            with open(folder / files["meta"], encoding="utf-8") as handle:
                meta = json.load(handle)
            faiss_index = faiss.read_index(str(folder / files["faiss"]))
            structure = IndexStructure(**manifest["index"])
            records = [ItemRecord(**row) for row in meta["items"]]
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # RuntimeError: faiss cannot parse
            raise damaged(f"{exc}") from exc
        if vectors.dtype != np.float32 or vectors.shape != (count, index.dim):
            raise damaged(f"vectors are {vectors.dtype} {vectors.shape}, expected float32 ({count}, {index.dim})")
        if ids.shape != (count,) or faiss_index.ntotal != count or faiss_index.d != index.dim:
            raise damaged(f"{len(ids)} ids and {faiss_index.ntotal} faiss vectors for {count} vectors")
        index._vectors, index._ids, index._count = vectors, ids, count
        index._next_id = int(meta["next_id"])
        for record in records:
            index._insert_record(record)
        if not set(index._paths_by_id) <= set(ids.tolist()):
            raise damaged("some paths point at no vector")
        if structure.kind == "ivf":
            faiss.extract_index_ivf(faiss_index).nprobe = structure.nprobe
        index.structure, index._faiss = structure, faiss_index
        index.generation = manifest["generation"]
        index._files = dict(files)
        index._dirty = {"vectors": False, "meta": False, "faiss": False}
        return index

    # -- read access ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of distinct vectors (searchable images)."""
        return self._count

    @property
    def path_count(self) -> int:
        """Number of indexed paths (aliases of identical files included)."""
        return len(self._records)

    @property
    def index_type(self) -> str:
        return self.structure.kind

    def record(self, path: str) -> Optional[ItemRecord]:
        return self._records.get(path)

    def records(self) -> list[ItemRecord]:
        with self._lock:
            return list(self._records.values())

    def id_for_hash(self, sha256: str) -> Optional[int]:
        return self._id_by_hash.get(sha256)

    def paths_for_id(self, item_id: int) -> list[str]:
        return list(self._paths_by_id.get(item_id, ()))

    def ids(self) -> np.ndarray:
        with self._lock:
            return self._ids[:self._count].copy()

    def vectors(self) -> np.ndarray:
        """Copy of the raw vectors, row order = `ids()`."""
        with self._lock:
            return self._vectors[:self._count].copy()

    def vector(self, item_id: int) -> Optional[np.ndarray]:
        with self._lock:
            row = self._row_of(item_id)
            return None if row is None else self._vectors[row].copy()

    def vector_for_path(self, path: str) -> Optional[np.ndarray]:
        """The stored vector of an indexed path (image -> image search without re-encoding)."""
        record = self._records.get(path)
        return None if record is None else self.vector(record.id)

    def memory_bytes(self) -> dict[str, int]:
        """Approximate resident bytes of the raw vectors and of the faiss structure."""
        n = self._count
        faiss_bytes = n * (4 * self.dim + 8)  # flat codes + id per vector, in both structures
        if self.structure.kind == "ivf":
            faiss_bytes += self.structure.nlist * 4 * self.dim
        return {"vectors": int(self._vectors.nbytes + self._ids.nbytes), "faiss": int(faiss_bytes)}

    def _row_of(self, item_id: int) -> Optional[int]:
        # ids are appended in increasing order and removal keeps order, so the live ids are sorted.
        row = int(np.searchsorted(self._ids[:self._count], item_id))
        return row if row < self._count and self._ids[row] == item_id else None

    # -- mutation ---------------------------------------------------------------------------------------------
    def add_items(self, vectors: np.ndarray, infos: Sequence[FileInfo]) -> list[int]:
        """Index `infos[i]` with embedding `vectors[i]`; returns the id each path now points at.

        A path already indexed is replaced. Content (sha256) already indexed, by another path or earlier in the
        batch, becomes an alias of the existing vector and its row in `vectors` is ignored.
        """
        vectors = normalize_rows(vectors, what="image embedding") if len(infos) else np.zeros((0, self.dim))
        if vectors.shape != (len(infos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(infos)}, {self.dim}), got {vectors.shape}")
        with self._lock:
            ids, new_rows, new_ids = [], [], []
            for row, info in enumerate(infos):
                item_id = self._id_by_hash.get(info.sha256)
                if item_id is None:
                    item_id = self._next_id
                    self._next_id += 1
                    self._id_by_hash[info.sha256] = item_id  # so a duplicate later in this batch aliases it
                    new_rows.append(row)
                    new_ids.append(item_id)
                ids.append(item_id)
            # All rows new (the usual bulk case): no fancy-index copy of a possibly multi-GB array.
            fresh = vectors if len(new_rows) == len(infos) else vectors[new_rows]
            self._append_vectors(fresh, np.asarray(new_ids, dtype=np.int64))
            self._set_records(infos, ids)
            return ids

    def add_alias(self, info: FileInfo) -> Optional[int]:
        """Record `info.path` as another path of already-indexed content; None if that content is unknown."""
        with self._lock:
            item_id = self._id_by_hash.get(info.sha256)
            if item_id is not None:
                self._set_records([info], [item_id])
            return item_id

    def _set_records(self, infos: Sequence[FileInfo], ids: Sequence[int]) -> None:
        now = time.time()
        maybe_orphans = []
        for info, item_id in zip(infos, ids):
            old = self._records.get(info.path)
            if old is not None:
                self._drop_record(old)
                maybe_orphans.append(old.id)
            self._insert_record(ItemRecord(id=item_id, path=info.path, size=int(info.size), mtime=float(info.mtime),
                                           sha256=info.sha256, added_at=now, source=info.source))
        # Checked after all inserts: a path re-added with its old content keeps its vector.
        self._remove_vectors([i for i in dict.fromkeys(maybe_orphans) if i not in self._paths_by_id])
        self._dirty["meta"] = True

    def update_file_stat(self, path: str, *, size: int, mtime: float) -> None:
        """A file touched but not changed: remember its new size/mtime so the next sync need not hash it."""
        with self._lock:
            old = self._records[path]
            self._records[path] = replace(old, size=int(size), mtime=float(mtime))
            self._dirty["meta"] = True

    def remove_paths(self, paths: Iterable[str]) -> int:
        """Forget these paths; a vector no path points at any more is removed too. Returns paths removed."""
        with self._lock:
            orphans: list[int] = []
            for path in paths:
                record = self._records.get(path)
                if record is not None:
                    self._drop_record(record)
                    orphans.append(record.id)
            self._remove_vectors([i for i in dict.fromkeys(orphans) if i not in self._paths_by_id])
            if orphans:
                self._dirty["meta"] = True
            return len(orphans)

    def _insert_record(self, record: ItemRecord) -> None:
        self._records[record.path] = record
        self._paths_by_id.setdefault(record.id, []).append(record.path)
        self._id_by_hash[record.sha256] = record.id

    def _drop_record(self, record: ItemRecord) -> None:
        del self._records[record.path]
        paths = self._paths_by_id[record.id]
        paths.remove(record.path)
        if not paths:
            del self._paths_by_id[record.id]
            del self._id_by_hash[record.sha256]

    def _append_vectors(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if not len(ids):
            return
        needed = self._count + len(ids)
        if self._count == 0 and len(ids) > len(self._vectors):
            # First bulk fill: adopt the caller's private normalized copy instead of copying gigabytes again.
            self._vectors, self._ids = np.ascontiguousarray(vectors, dtype=np.float32), ids.copy()
        else:
            if needed > len(self._vectors):
                # Grow geometrically: syncing n images costs O(n) copying, not O(n^2).
                capacity = max(needed, int(len(self._vectors) * 1.5), 1024)
                grown = np.empty((capacity, self.dim), dtype=np.float32)
                grown[:self._count] = self._vectors[:self._count]
                grown_ids = np.empty(capacity, dtype=np.int64)
                grown_ids[:self._count] = self._ids[:self._count]
                self._vectors, self._ids = grown, grown_ids
            self._vectors[self._count:needed] = vectors
            self._ids[self._count:needed] = ids
        self._count = needed
        self._dirty["vectors"] = self._dirty["faiss"] = True
        if self._faiss is not None:
            if self._needs_rebuild():
                self._faiss = None  # rebuilt from the raw vectors before the next search or save
            else:
                self._faiss.add_with_ids(vectors, ids)

    def _remove_vectors(self, ids: list[int]) -> None:
        if not ids:
            return
        doomed = np.asarray(ids, dtype=np.int64)
        keep = ~np.isin(self._ids[:self._count], doomed)
        kept = int(keep.sum())
        self._vectors = np.ascontiguousarray(self._vectors[:self._count][keep])
        self._ids = self._ids[:self._count][keep].copy()
        self._count = kept
        self._dirty["vectors"] = self._dirty["faiss"] = True
        if self._faiss is not None:
            self._faiss.remove_ids(doomed)
            if self._needs_rebuild():
                self._faiss = None

    # -- search structure -------------------------------------------------------------------------------------
    def _needs_rebuild(self) -> bool:
        n, s = self._count, self.structure
        if self._faiss is None:
            return True
        if s.kind == "flat":
            return n >= self.settings.exact_threshold
        return n < self.settings.exact_threshold // 2 or n > 2 * s.trained_on

    def ensure_built(self) -> None:
        """Build or rebuild the faiss structure if the collection outgrew (or shrank below) the current one."""
        with self._lock:
            if self._needs_rebuild():
                self._rebuild()

    def rebuild(self) -> None:
        """Force a rebuild from the raw vectors (retrains and recalibrates an IVF index)."""
        with self._lock:
            self._rebuild()

    def _rebuild(self) -> None:
        started = time.perf_counter()
        n = self._count
        vectors, ids = self._vectors[:n], self._ids[:n]
        if n < self.settings.exact_threshold:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            if n:
                index.add_with_ids(vectors, ids)
            self.structure = IndexStructure(kind="flat")
        else:
            nlist = ivf_nlist_for(n, max_nlist=self.settings.max_nlist)
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = KMEANS_ITERATIONS
            rng = np.random.default_rng(n)  # seeded: the same collection gives the same index
            train_rows = np.sort(rng.choice(n, size=min(n, TRAIN_POINTS_PER_CENTROID * nlist), replace=False))
            index.train(np.ascontiguousarray(vectors[train_rows]))
            index.add_with_ids(vectors, ids)
            nprobe, recall = calibrate_nprobe(index, vectors, ids, target=self.settings.target_recall + RECALL_MARGIN)
            index.nprobe = nprobe
            self.structure = IndexStructure(kind="ivf", nlist=nlist, nprobe=nprobe, trained_on=n,
                                            measured_recall=round(recall, 4))
        self._faiss = index
        self._dirty["faiss"] = True
        log.info("built %s index over %d vectors in %.1fs %s", self.structure.kind, n,
                 time.perf_counter() - started, self.structure)

    # -- search -----------------------------------------------------------------------------------------------
    def search(self, query_vectors: np.ndarray, k: int = 10, threshold: Optional[float] = None
               ) -> list[list[dict]]:
        """Nearest images by cosine similarity, one list per query row (a (d,) vector is one query).

        A hit is {"id", "path", "score", "aliases"}, best first; at most `k` hits, fewer if the index is smaller
        or if `threshold` (minimum score) cuts them. Query rows are L2-normalized here.
        """
        if int(k) < 1:
            raise ClipAppError(f"k must be at least 1, not {k}.")
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ClipAppError(f"Query vectors have shape {tuple(np.shape(query_vectors))}; this index holds "
                               f"{self.dim}-d vectors of model {self.spec}.")
        if len(queries) == 0:
            return []
        queries = normalize_rows(queries, what="query vector")
        with self._lock:
            if self._count == 0:
                return [[] for _ in range(len(queries))]
            self.ensure_built()
            k = min(int(k), self._count)
            with _faiss_threads(1 if len(queries) < SINGLE_THREAD_BELOW else None):
                scores, ids = self._faiss.search(queries, k)
            if self.structure.kind == "ivf":
                self._complete_short_rows(queries, k, scores, ids)
            return [self._hits(row_scores, row_ids, threshold) for row_scores, row_ids in zip(scores, ids)]

    def _complete_short_rows(self, queries: np.ndarray, k: int, scores: np.ndarray, ids: np.ndarray) -> None:
        # The probed IVF lists can hold fewer than k vectors (large k): answer those queries exactly instead.
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):
            exact_scores, rows = exact_top_k(self._vectors[:self._count], queries[short], k)
            scores[short], ids[short] = exact_scores, self._ids[rows]

    def _hits(self, scores: np.ndarray, ids: np.ndarray, threshold: Optional[float]) -> list[dict]:
        hits = []
        for score, item_id in zip(scores.tolist(), ids.tolist()):
            if item_id < 0 or (threshold is not None and score < threshold):
                continue
            paths = self._paths_by_id.get(item_id)
            if paths:
                hits.append({"id": item_id, "path": paths[0], "score": score, "aliases": paths[1:]})
        return hits

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self) -> int:
        """Write a new generation crash-safely (see module docstring); returns its number. No-op if unchanged."""
        if self.path is None:
            raise ClipAppError("This index is in memory only; give it a folder to save it.")
        started = time.perf_counter()
        self.path.mkdir(parents=True, exist_ok=True)
        with self._lock, _folder_lock(self.path):
            on_disk = read_manifest(self.path, missing_ok=True)
            disk_generation = on_disk.get("generation", 0) if on_disk else 0
            if disk_generation != self.generation:
                # Another process saved since we loaded: its cleanup may have deleted files we would reuse.
                log.warning("index %s was saved by another process (generation %s, ours %s); overwriting it",
                            self.path, disk_generation, self.generation)
                self._dirty = {key: True for key in self._dirty}
            elif on_disk and not any(self._dirty.values()):
                return self.generation
            self.ensure_built()
            generation = max(disk_generation, self.generation) + 1
            files = dict(self._files)
            n = self._count
            if self._dirty["vectors"] or "vectors" not in files:
                files["vectors"] = self._write_npy(f"vectors-{generation:06d}.npy", self._vectors[:n])
                files["ids"] = self._write_npy(f"ids-{generation:06d}.npy", self._ids[:n])
            if self._dirty["meta"] or "meta" not in files:
                files["meta"] = self._write_meta(f"meta-{generation:06d}.json")
            if self._dirty["faiss"] or "faiss" not in files:
                files["faiss"] = f"faiss-{generation:06d}.index"
                with atomic_path(self.path / files["faiss"]) as tmp:
                    faiss.write_index(self._faiss, str(tmp))
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "model_spec": self.spec,
                "embed_dim": self.dim,
                "generation": generation,
                "count": n,
                "path_count": len(self._records),
                "index_type": self.structure.kind,
                "index": asdict(self.structure),
                "settings": asdict(self.settings),
                "files": files,
                "file_sizes": {key: (self.path / name).stat().st_size for key, name in files.items()},
                "saved_at": time.time(),
            }
            write_json_atomic(self.path / MANIFEST_NAME, manifest)  # the commit point
            self.generation, self._files = generation, files
            self._dirty = {key: False for key in self._dirty}
            _remove_unreferenced_files(self.path, set(files.values()))
        self.last_save_seconds = time.perf_counter() - started
        return generation

    def _write_npy(self, name: str, array: np.ndarray) -> str:
        with atomic_path(self.path / name) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        return name

    def _write_meta(self, name: str) -> str:
        # vars() and json.dumps (the C encoder), not asdict() and json.dump: 30x faster at 100k records.
        meta = {"format_version": FORMAT_VERSION, "next_id": self._next_id,
                "items": [vars(record) for record in self._records.values()]}
        with atomic_path(self.path / name) as tmp:
            tmp.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
        return name

    def describe(self) -> dict:
        """Summary for the UI/CLI."""
        return {"path": str(self.path) if self.path else None, "model": self.spec, "dim": self.dim,
                "images": self._count, "paths": len(self._records), "generation": self.generation,
                **asdict(self.structure)}


def calibrate_nprobe(index: "faiss.IndexIVF", vectors: np.ndarray, ids: np.ndarray, *, target: float,
                     n_queries: int = CALIBRATION_QUERIES, k: int = CALIBRATION_K) -> tuple[int, float]:
    """Smallest nprobe whose recall@k against exact search reaches `target`; returns (nprobe, recall).

    Queries are a fixed sample of the index's own vectors; each query's own vector is dropped from both the
    exact and the approximate result lists (leave-one-out), so finding itself does not inflate the recall.
    Recall grows with nprobe (more lists probed = a superset of candidates), so double, then bisect.
    """
    n = len(vectors)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(n, n_queries), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    _, exact_rows = exact_top_k(vectors, queries, k + 1)
    truth = [[i for i in ids[r].tolist() if i != ids[q]][:k] for q, r in zip(rows, exact_rows)]

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        _, found = index.search(queries, k + 1)
        hits = sum(len(set(t) & set([i for i in f if i != ids[q]][:k])) for q, t, f in zip(rows, truth, found.tolist()))
        return hits / max(1, sum(len(t) for t in truth))

    measured: dict[int, float] = {}
    low, nprobe = 0, 1
    while True:
        measured[nprobe] = recall_at(nprobe)
        if measured[nprobe] >= target or nprobe >= index.nlist:
            break
        low, nprobe = nprobe, min(2 * nprobe, index.nlist)
    high = nprobe  # recall(low) < target <= recall(high), unless nprobe reached nlist
    if measured[high] >= target:
        while high - low > 1:
            middle = (low + high) // 2
            measured[middle] = recall_at(middle)
            if measured[middle] >= target:
                high = middle
            else:
                low = middle
    index.nprobe = high
    return high, measured[high]


# ---------------------------------------------------------------------------------------------------------------
# Folder-level helpers for persistence
# ---------------------------------------------------------------------------------------------------------------
def read_manifest(folder: Path, *, missing_ok: bool = False) -> dict:
    path = Path(folder) / MANIFEST_NAME
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ClipAppError(f"No index at {folder} (no {MANIFEST_NAME}). Build one first, e.g. "
                           f"`python -m clipapp index IMAGE_FOLDER --index {folder}`.") from None
    except (OSError, ValueError) as exc:
        raise ClipAppError(f"The index manifest {path} cannot be read ({exc}). Rebuild the index.") from exc
    if manifest.get("format") != FORMAT_NAME:
        raise ClipAppError(f"{path} is not a clipapp image index manifest.")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ClipAppError(f"The index at {folder} was written by a newer clipapp (format "
                           f"{manifest.get('format_version')}, this one reads {FORMAT_VERSION}). Upgrade clipapp.")
    return manifest


def _check_model(manifest: dict, folder: Path, expected_spec: Optional[str], expected_dim: Optional[int]) -> None:
    built_with, dim = manifest["model_spec"], manifest["embed_dim"]
    wrong_spec = expected_spec is not None and expected_spec != built_with
    if wrong_spec or (expected_dim is not None and expected_dim != dim):
        running = expected_spec if expected_spec is not None else f"a model with {expected_dim}-d embeddings"
        raise ClipAppError(
            f"The index at {folder} was built with model {built_with} ({dim}-d embeddings), the app runs model "
            f"{running}; rebuild it or start the app with --model {built_with}."
        )


class _folder_lock:
    """Exclusive advisory lock on INDEX/.lock while saving, so two processes never interleave their files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.handle = None

    def __enter__(self):
        if fcntl is not None:
            self.handle = open(self.folder / LOCK_NAME, "a+")
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()


def _remove_unreferenced_files(folder: Path, keep: set[str]) -> None:
    """Delete data files of other generations and temp files of interrupted saves (we hold the save lock)."""
    for entry in os.scandir(folder):
        stale_temp = entry.name.startswith(".") and entry.name.endswith(".tmp")
        old_data = _DATA_FILE.match(entry.name) is not None and entry.name not in keep
        if stale_temp or old_data:
            try:
                os.unlink(entry.path)
            except OSError as exc:  # pragma: no cover - e.g. removed by hand meanwhile
                log.warning("could not remove stale index file %s: %s", entry.path, exc)


# ---------------------------------------------------------------------------------------------------------------
# Filling the index
# ---------------------------------------------------------------------------------------------------------------
def image_sha256(image) -> str:
    """Content hash of a decoded PIL image: mode, size and pixels (an upload has no file bytes to hash)."""
    digest = hashlib.sha256(f"clipapp-pixels:{image.mode}:{image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _check_encoder(index: ImageIndex, encoder: Encoder) -> None:
    if encoder.spec != index.spec or int(encoder.embed_dim) != index.dim:
        where = index.path or "in memory"
        raise ClipAppError(
            f"The index at {where} was built with model {index.spec} ({index.dim}-d embeddings), the app runs model "
            f"{encoder.spec} ({encoder.embed_dim}-d); rebuild it or start the app with --model {index.spec}."
        )


@dataclass
class SyncReport:
    added: int = 0  # paths new to the index (aliases of known content included)
    updated: int = 0  # indexed paths whose content changed
    removed: int = 0  # indexed paths whose file is gone
    skipped: list[dict] = field(default_factory=list)  # {"path", "error"}: unreadable, not an image
    total: int = 0  # paths in the index afterwards

    def as_dict(self) -> dict:
        return asdict(self)


def sync_folder(index: ImageIndex, folder: str | os.PathLike, encoder: Encoder, *,
                progress: Optional[ProgressFn] = None, batch_size: int = 32,
                save_every_batches: int = 20) -> dict:
    """Bring the index up to date with the image files under `folder` (recursive; hidden files skipped).

    Only new or changed files are embedded: a file whose size and mtime match its record is trusted unchanged;
    otherwise it is hashed, and a touched but identical file only has its size/mtime refreshed. Content already
    in the index (a copy or a moved file) becomes an alias without encoding. Records of files under `folder` that
    are gone are dropped (other folders and uploads are untouched). A file the encoder cannot read is listed in
    `skipped` (and its old record, if any, dropped); nothing here is fatal.
    Saves at the end, and checkpoints every `save_every_batches` batches so a crash keeps most of the work; a
    checkpoint waits until 5x the last save's duration has passed, so saving a big index costs at most ~20% of
    the run.
    Returns {"added", "updated", "removed", "skipped": [{"path", "error"}], "total"}.
    """
    _check_encoder(index, encoder)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ClipAppError(f"{folder}: not a folder.")
    root = root.resolve()
    report = SyncReport()
    notify = progress or (lambda done, total, message: None)

    found: dict[str, tuple[int, float]] = {}
    for file_path in list_image_files(root):
        try:
            stat = file_path.stat()
        except OSError as exc:  # e.g. a dangling symlink
            report.skipped.append({"path": str(file_path), "error": f"cannot read: {exc.strerror or exc}"})
            continue
        found[str(file_path)] = (stat.st_size, stat.st_mtime)

    prefix = str(root).rstrip(os.sep) + os.sep
    gone = [r.path for r in index.records() if r.source == "file" and r.path.startswith(prefix) and r.path not in found]
    changed = [p for p, (size, mtime) in found.items()
               if (r := index.record(p)) is None or r.size != size or r.mtime != mtime]

    hashes = _hash_files(changed, notify, report)
    to_encode: dict[str, list[tuple[FileInfo, bool]]] = {}  # content hash -> files with it (in order)
    for path in changed:
        if path not in hashes:
            continue
        size, mtime = found[path]
        previous = index.record(path)
        if previous is not None and previous.sha256 == hashes[path]:
            index.update_file_stat(path, size=size, mtime=mtime)  # touched, same bytes: no re-embedding
            continue
        info = FileInfo(path=path, size=size, mtime=mtime, sha256=hashes[path])
        if index.add_alias(info) is not None:  # before removals, so a moved file keeps its vector
            _count_change(report, existed=previous is not None)
        else:
            to_encode.setdefault(info.sha256, []).append((info, previous is not None))
    report.removed = index.remove_paths(gone)

    try:
        _embed_new_content(index, encoder, to_encode, report, notify=notify, batch_size=batch_size,
                           save_every_batches=save_every_batches)
    finally:
        # Also on errors and interrupts: whatever was embedded is kept.
        if index.path is not None:
            index.save()
    report.total = index.path_count
    notify(1, 1, f"Indexed {report.total} images")
    return report.as_dict()


def _count_change(report: SyncReport, *, existed: bool) -> None:
    if existed:
        report.updated += 1
    else:
        report.added += 1


def _hash_files(paths: list[str], notify: ProgressFn, report: SyncReport) -> dict[str, str]:
    """sha256 of each readable file, in a few threads (I/O bound; hashlib releases the GIL)."""
    def attempt(path: str) -> tuple[str, Optional[str], Optional[str]]:
        try:
            return path, file_sha256(path), None
        except OSError as exc:
            return path, None, f"cannot read: {exc.strerror or exc}"

    hashes: dict[str, str] = {}
    if not paths:
        return hashes
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="hash") as pool:
        for done, (path, digest, error) in enumerate(pool.map(attempt, paths), 1):
            if digest is None:
                report.skipped.append({"path": path, "error": error})
            else:
                hashes[path] = digest
            if done % 256 == 0 or done == len(paths):
                notify(done, len(paths), "Checking new and changed files")
    return hashes


def _embed_new_content(index: ImageIndex, encoder: Encoder, to_encode: dict[str, list[tuple[FileInfo, bool]]],
                       report: SyncReport, *, notify: ProgressFn, batch_size: int, save_every_batches: int) -> None:
    # One file per distinct content is encoded; its duplicates become aliases in the same add_items call.
    if not to_encode:
        return
    group_of = {files[0][0].path: files for files in to_encode.values()}
    total = len(group_of)
    pending_vectors: list[np.ndarray] = []
    pending: list[tuple[FileInfo, bool]] = []
    batches_since_save = 0
    last_save = time.perf_counter()

    def flush() -> None:
        if pending:
            index.add_items(np.stack(pending_vectors), [info for info, _ in pending])
            for _, existed in pending:
                _count_change(report, existed=existed)
            pending.clear()
            pending_vectors.clear()

    notify(0, total, "Embedding images")
    results = encoder.encode_image_files(list(group_of), batch_size=batch_size)
    for done, (path, vector, error) in enumerate(results, 1):
        files = group_of[path]
        if vector is None:
            for info, existed in files:
                report.skipped.append({"path": info.path, "error": error or "could not be encoded"})
            # A file that changed into something unreadable no longer matches its old vector.
            index.remove_paths([info.path for info, existed in files if existed])
        else:
            for entry in files:
                pending_vectors.append(vector)
                pending.append(entry)
        if done % batch_size == 0 or done == total:
            flush()
            batches_since_save += 1
            notify(done, total, "Embedding images")
            elapsed = time.perf_counter() - last_save
            if (index.path is not None and batches_since_save >= save_every_batches and done < total
                    and elapsed >= 5 * index.last_save_seconds):
                index.save()
                batches_since_save, last_save = 0, time.perf_counter()
    flush()


def add_images(index: ImageIndex, images: Sequence[tuple[str, Any]], encoder: Encoder, *,
               batch_size: int = 32, save: bool = True) -> dict:
    """Index uploaded PIL images under the given names (no files on disk; content hash = pixels).

    Same name with the same pixels: nothing to do; same pixels under another name: an alias, not re-encoded;
    same name with new pixels: replaced ("updated"). Returns the same report as `sync_folder` (removed = 0).
    """
    _check_encoder(index, encoder)
    report = SyncReport()
    to_encode: list[tuple[FileInfo, Any, bool]] = []
    seen_hashes: set[str] = set()
    for name, image in images:
        if not isinstance(name, str) or not name.strip():
            raise ClipAppError("Every uploaded image needs a name to be stored under.")
        digest = image_sha256(image)
        previous = index.record(name)
        if previous is not None and previous.sha256 == digest:
            continue
        info = FileInfo(path=name, size=len(image.tobytes()), mtime=0.0, sha256=digest, source="upload")
        if digest not in seen_hashes and index.add_alias(info) is not None:
            _count_change(report, existed=previous is not None)
            continue
        to_encode.append((info, image, previous is not None))
        seen_hashes.add(digest)
    unique = {}
    for info, image, _ in to_encode:
        unique.setdefault(info.sha256, image)
    hashes = list(unique)
    vectors_by_hash: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), batch_size):
        chunk = hashes[start:start + batch_size]
        for digest, vector in zip(chunk, encoder.encode_images([unique[h] for h in chunk])):
            vectors_by_hash[digest] = vector
    if to_encode:
        index.add_items(np.stack([vectors_by_hash[info.sha256] for info, _, _ in to_encode]),
                        [info for info, _, _ in to_encode])
        for _, _, existed in to_encode:
            _count_change(report, existed=existed)
    if save and index.path is not None:
        index.save()
    report.total = index.path_count
    return report.as_dict()


# ---------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------
class TqdmProgress:
    """Adapts `progress(done, total, message)` to a tqdm bar (a new phase, i.e. a new message, resets it)."""

    def __init__(self, **tqdm_kwargs: Any):
        self._kwargs = tqdm_kwargs
        self._bar = None
        self._message: Optional[str] = None

    def __call__(self, done: int, total: int, message: str) -> None:
        from tqdm.auto import tqdm  # imported on use: the core index does not need tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=message, **self._kwargs)
        elif message != self._message or total != self._bar.total:
            self._bar.reset(total=total)
            self._bar.set_description(message)
        self._message = message
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tqdm_progress(**tqdm_kwargs: Any) -> TqdmProgress:
    """A `progress` callable for the CLI: `with tqdm_progress(unit="img") as p: sync_folder(..., progress=p)`."""
    return TqdmProgress(**tqdm_kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Queries (rclip-style "dog + snow - grass")
# ---------------------------------------------------------------------------------------------------------------
IMAGE_TERM_PREFIX = "img:"
# An operator is a + or - at the start or after whitespace: "t-shirt" and "my-photo.jpg" stay whole words.
_OPERATOR = re.compile(r"(?:^|(?<=\s))([+-])")


def parse_query(query: str) -> list[tuple[float, str]]:
    """Split "dog + snow - grass" into [(1.0, "dog"), (1.0, "snow"), (-1.0, "grass")].

    `+`/`-` count as operators only at the start or after a space. A term may be an image: `img:PATH`, or the
    path of an existing image file. A blank query, an operator without a term, or no positive term is an error.
    """
    if not isinstance(query, str) or not query.strip():
        raise ClipAppError("The search query is empty: type what to look for, e.g. \"dog + snow - grass\".")
    parts = _OPERATOR.split(query.strip())
    terms: list[tuple[float, str]] = []
    weight = 1.0
    for position, part in enumerate(parts):
        if position % 2 == 1:  # an operator
            weight = 1.0 if part == "+" else -1.0
            continue
        term = part.strip()  # inner spaces kept: a term may be a file path
        if not term:
            if position == 0:
                continue  # the query starts with an operator
            raise ClipAppError(f"The query {query!r} has a '+' or '-' with nothing after it.")
        terms.append((weight, term))
        weight = 1.0
    _check_terms(terms, query)
    return terms


def _check_terms(terms: Sequence[tuple[float, str]], query: Any) -> None:
    if not terms:
        raise ClipAppError("The search query is empty: type what to look for, e.g. \"dog + snow - grass\".")
    if not any(weight > 0 for weight, _ in terms):
        raise ClipAppError(f"The query {query!r} only subtracts; add something to look for, e.g. \"dog - grass\".")


def image_term_path(term: str) -> Optional[str]:
    """The image file a query term names (`img:PATH` or an existing image path), else None (a text term)."""
    if term.startswith(IMAGE_TERM_PREFIX):
        path = os.path.expanduser(term[len(IMAGE_TERM_PREFIX):].strip())
        if not os.path.isfile(path):
            raise ClipAppError(f"Query image {path!r} does not exist.")
        return path
    path = os.path.expanduser(term)
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(path):
        return path
    return None


def compose_query(terms: str | Sequence[tuple[float, str]], encoder: Encoder,
                  templates: Any = None, *, allow_image_paths: bool = True) -> np.ndarray:
    """One normalized query vector: the weighted sum of the terms' embeddings, renormalized.

    Text terms use `encoder.text_embeddings(labels, templates)` (template ensemble) when `templates` is given,
    else `encoder.encode_texts`; image terms are encoded through `encoder.encode_image_files` (the app's one image
    decoder). `terms` may also be a query string, parsed with `parse_query`. `allow_image_paths=False` treats
    every term as text: a query typed in a browser must not make the server read its own files.
    """
    if isinstance(terms, str):
        terms = parse_query(terms)
    terms = list(terms)
    _check_terms(terms, " ".join(t for _, t in terms))
    kinds = [(weight, term, image_term_path(term) if allow_image_paths else None) for weight, term in terms]
    texts = [term for _, term, image in kinds if image is None]
    images = [image for _, _, image in kinds if image is not None]
    text_vectors = iter(())
    if texts:
        text_vectors = iter(encoder.text_embeddings(texts, templates) if templates is not None
                            else encoder.encode_texts(texts))
    image_vectors = []
    for path, vector, error in encoder.encode_image_files(images) if images else ():
        if vector is None:
            raise ClipAppError(f"Query image {path}: {error or 'could not be read'}")
        image_vectors.append(vector)
    image_vectors = iter(image_vectors)
    total = np.zeros(encoder.embed_dim, dtype=np.float64)
    for weight, _, image in kinds:
        vector = next(image_vectors) if image is not None else next(text_vectors)
        total += weight * np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(total)
    if norm < 1e-6:
        raise ClipAppError("The query terms cancel each other out; there is nothing left to search for.")
    return (total / norm).astype(np.float32)


def query_index(index: ImageIndex, query: str, encoder: Encoder, *, k: int = 10,
                threshold: Optional[float] = None, templates: Any = None, allow_image_paths: bool = True) -> list[dict]:
    """Parse, compose and search in one call: the hits for a text/image query string."""
    _check_encoder(index, encoder)
    vector = compose_query(query, encoder, templates, allow_image_paths=allow_image_paths)
    return index.search(vector, k=k, threshold=threshold)[0]
