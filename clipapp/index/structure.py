"""The faiss search structure: a derived, rebuildable cache of the store's vectors.

Size policy (after autofaiss' optimize.py: flat when small, IVF-Flat while the float copy fits, compressed codes
beyond), inner product on L2-normalized float32 = cosine:

* fewer than `exact_threshold` vectors (default 50,000): exact, `IndexIDMap2(IndexFlatIP)`;
* IVF-Flat while n < `compress_threshold` (default 1,000,000) and its float copy (n * (4d + 8) bytes) fits the
  memory budget (`max_memory`, None = no budget);
* beyond: IVF-PQ, m = d/4 bytes per vector (the largest of d/4, d/8, d/16, d/32 that fits the budget), 8-bit codes,
  in RAM; every query's top `RERANK` candidates are re-scored exactly against the stored float vectors (the
  store's vector file, read with pread, so they cost page cache, not process memory).
  IVF-PQ rather than IVF-SQ8: SQ8 keeps d bytes per vector (512 MB at 1M x 512, half the 1 GB goal) where PQ
  keeps d/4 and the exact re-rank restores the recall (figures in docs/benchmarks.md, bench/bench_search.py).
* IVF: nlist = 4*sqrt(n), at most `max_nlist` (default 1024: k-means time grows as nlist^2; measured at 1M x 512
  on 2 cores: 1000 lists train+fill in 23 s and answer in 1.4 ms, 2000 lists 76 s) and at least 39 training
  points per list (faiss' minimum). IVF rather than HNSW: it supports removal by id and cheap incremental adds.
* From LARGE_INDEX (4M) vectors, when `max_nlist` is left automatic: up to LARGE_MAX_NLIST (4096) lists behind an
  HNSW32 coarse quantizer (autofaiss' choice at this scale). Assigning every vector to its list is the build's
  largest cost and grows with nlist under a flat quantizer: 50k clustered 512-d vectors to 8192 centroids took 6.0 s
  flat and 2.6 s through HNSW at efSearch 64 (99.9% the same list; 98.8% at 32, 95.5% at 16), so a 10M build
  assigns in minutes rather than 20+. Below 4M the flat quantizer stays: at 1M it kept recall 0.996 where HNSW with
  4096 lists reached 0.968 (docs/benchmarks.md, "Coarse quantizer").
* nprobe: the smallest whose recall@10 (after re-rank, for IVF-PQ) reaches target + 0.02, measured at build time
  on 500 held-out stored vectors: they are queries and are excluded from both the exact and the approximate
  result lists (an `IDSelectorNot`), so a query never finds itself.
* Rebuilt only when the policy says so: the kind the policy picks changed, or an IVF index has doubled since it
  was trained (its nlist/nprobe are stale), or shrunk below half the exact threshold. Otherwise a change is
  applied in place (add_with_ids / remove_ids).

The cache on disk: `faiss-<next_id>-<removal_seq>.index` (faiss.write_index) named by `faiss.json`, which also
records the change it covers (content ids below `next_id`, removals up to `removal_seq`), its vector count and
its IndexStructure, and the compaction epoch of the ids it holds (`vector_epoch`; a cache of another epoch is
ignored, see compaction.py). On open, rows added or removed after that are applied; a missing, unreadable or
inconsistent cache is rebuilt from the store. Written only outside a write transaction, so it never covers
uncommitted rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from clipapp.errors import ClipAppError
from clipapp.storage import atomic_path
from clipapp.units import parse_size

log = logging.getLogger(__name__)

DEFAULT_EXACT_THRESHOLD = 50_000
DEFAULT_COMPRESS_THRESHOLD = 1_000_000
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_MAX_NLIST = 1024
LARGE_INDEX = 4_000_000
LARGE_MAX_NLIST = 4096
FLAT_QUANTIZER_MAX_NLIST = DEFAULT_MAX_NLIST  # more lists than this: an HNSW coarse quantizer
HNSW_QUANTIZER_EF = 64  # efSearch of the HNSW coarse quantizer (the add's assignment; a query uses max(ef, nprobe))
CALIBRATION_QUERIES = 500
CALIBRATION_K = 10
# Leave-out queries read recall ~0.01 higher than fresh queries of the same distribution (measured at 100k x 512
# on the benchmark's clustered data), and 500 queries x 10 neighbours measure it to +-0.003.
RECALL_MARGIN = 0.02
MIN_POINTS_PER_CENTROID = 39
TRAIN_POINTS_PER_CENTROID = 50
KMEANS_ITERATIONS = 10
PQ_TRAIN_POINTS = 65_536  # faiss trains each 256-centroid sub-quantizer on at most 256*256 points anyway
RERANK = 100  # candidates per query re-scored exactly with IVF-PQ (at least 4k for larger k)...
MAX_RERANK = 800  # ...doubled up to this while the calibration misses the recall target
SINGLE_THREAD_BELOW = 8
ADD_CHUNK = 65_536  # rows read from the vector file per faiss add: bounds the build's temporaries
CACHE_META = "faiss.json"


@dataclass
class IndexStructure:
    """How the faiss index is built; saved with the cache so a reopened index searches the same way."""

    kind: str = "flat"  # "flat" (exact), "ivf" (IVF-Flat) or "ivfpq" (IVF-PQ codes + exact re-rank)
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0  # vectors in the index when the IVF was trained
    measured_recall: float | None = None  # recall@10 vs exact at nprobe, measured at build time
    pq_m: int = 0  # bytes per vector of the PQ codes
    rerank: int = 0  # candidates re-scored exactly per query


@dataclass
class IndexSettings:
    """Persisted in the store's meta table, so a reopened index keeps the policy it was created with."""

    exact_threshold: int = DEFAULT_EXACT_THRESHOLD
    target_recall: float = DEFAULT_TARGET_RECALL
    max_nlist: int | None = None  # None: automatic (DEFAULT_MAX_NLIST, LARGE_MAX_NLIST from LARGE_INDEX vectors)
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
    max_memory: int | None = None  # bytes the search structure may hold in RAM (None: no budget)


def parse_memory_size(text: str | int | None) -> int | None:
    """'1GB', '512M', '2.5g', '1073741824' -> bytes (`clipapp.units.parse_size`); None/'' -> None (no budget)."""
    size = parse_size(text, what="memory size")
    if size is not None and size < (1 << 20):
        raise ClipAppError(f"A memory budget of {text!r} is too small for a search index; give at least 1MB.")
    return size


def exact_top_k(
    database: np.ndarray, queries: np.ndarray, k: int, *, block_bytes: int = 64 << 20, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: (scores, row numbers), each (q, min(k, n)), best first.

    Processed in blocks of database rows so the (q, block) score matrix stays under `block_bytes` (and a memory
    mapped database is read block by block). `exclude`: a boolean mask of rows never returned.
    """
    n, q = len(database), len(queries)
    k = min(k, n)
    best_scores = np.full((q, k), -np.inf, dtype=np.float32)
    best_rows = np.full((q, k), -1, dtype=np.int64)
    if k == 0:
        return best_scores, best_rows
    block = max(k, block_bytes // (4 * max(q, 1)))
    for start in range(0, n, block):
        scores = queries @ np.asarray(database[start : start + block]).T
        if exclude is not None:
            scores[:, exclude[start : start + block]] = -np.inf
        kk = min(k, scores.shape[1])
        part = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, -kk:]
        all_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        all_rows = np.concatenate([best_rows, part + start], axis=1)
        keep = np.argpartition(all_scores, all_scores.shape[1] - k, axis=1)[:, -k:]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_rows = np.take_along_axis(all_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores, best_rows = (
        np.take_along_axis(best_scores, order, axis=1),
        np.take_along_axis(best_rows, order, axis=1),
    )
    best_rows[~np.isfinite(best_scores)] = -1
    return best_scores, best_rows


def exact_over_ids(
    ids: np.ndarray,
    queries: np.ndarray,
    k: int,
    read_rows,
    *,
    exclude: np.ndarray | None = None,
    chunk_rows: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among the stored vectors of `ids` (read `chunk_rows` at a time): (scores, ids), -1 = none."""
    scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids_out = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(ids), chunk_rows):
        chunk = ids[start : start + chunk_rows]
        mask = None if exclude is None else exclude[start : start + chunk_rows]
        scores, rows = exact_top_k(read_rows(chunk), queries, k, exclude=mask)
        merged_scores = np.concatenate([scores_out, scores], axis=1)
        merged_ids = np.concatenate([ids_out, np.where(rows >= 0, chunk[np.maximum(rows, 0)], -1)], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        scores_out = np.take_along_axis(merged_scores, keep, axis=1)
        ids_out = np.take_along_axis(merged_ids, keep, axis=1)
    return scores_out, ids_out


def ivf_nlist_for(count: int, *, max_nlist: int | None = None) -> int:
    """4*sqrt(n) lists, at most `max_nlist` (None: the size policy's), never fewer than MIN_POINTS_PER_CENTROID
    vectors per list."""
    if max_nlist is None:
        max_nlist = LARGE_MAX_NLIST if count >= LARGE_INDEX else DEFAULT_MAX_NLIST
    return max(1, min(round(4 * math.sqrt(count)), max_nlist, count // MIN_POINTS_PER_CENTROID))


def coarse_quantizer(nlist: int, dim: int) -> faiss.Index:
    """Flat up to FLAT_QUANTIZER_MAX_NLIST lists, HNSW32 beyond (the module docstring: assignment cost grows with
    nlist)."""
    if nlist <= FLAT_QUANTIZER_MAX_NLIST:
        return faiss.IndexFlatIP(dim)
    quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    quantizer.hnsw.efSearch = HNSW_QUANTIZER_EF
    return quantizer


def pq_m_for(count: int, dim: int, budget: int | None) -> int:
    """Bytes per vector of the PQ codes: d/4, or less when the budget is tight (d/8, d/16, at least d/32).

    d/4 because with 100 candidates re-ranked, d/8 reached recall@10 0.914 where d/4 reached the nprobe's
    ceiling of 0.956 (20k x 64 clustered, tests/unit/index/test_index_store.py's data)."""
    options = [m for m in (dim // 4, dim // 8, dim // 16, dim // 32) if m >= 1 and dim % m == 0] or [1]
    for m in options:
        if budget is None or count * (m + 8) <= budget:
            return m
    return options[-1]


def choose_kind(count: int, dim: int, settings: IndexSettings) -> str:
    """The size policy (module docstring)."""
    if count < settings.exact_threshold:
        return "flat"
    flat_bytes = count * (4 * dim + 8)
    if count < settings.compress_threshold and (settings.max_memory is None or flat_bytes <= settings.max_memory):
        return "ivf"
    return "ivfpq"


@contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """Run faiss calls in this block on `count` OpenMP threads (None: unchanged).

    A single query is too little work to share: on a busy 2-core machine, waking a second OpenMP thread for an
    exact search over 10k vectors cost a scheduler tick, 24 ms instead of 0.6 ms. OpenMP thread counts are per
    calling thread, so this does not affect searches or builds running in other threads.
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
# The structure
# ---------------------------------------------------------------------------------------------------------------
class SearchStructure:
    """A faiss index over (a subset of) the store's vectors plus what it covers. `vectors_for(ids)` reads stored
    float vectors (for the exact re-rank)."""

    def __init__(
        self, index: faiss.Index, structure: IndexStructure, *, next_id: int, removal_seq: int, vector_epoch: int = 0
    ):
        self.index, self.structure = index, structure
        self.next_id, self.removal_seq = next_id, removal_seq  # the change it covers
        self.vector_epoch = vector_epoch  # the compaction epoch its ids belong to
        self.saved_ntotal = -1  # ntotal when last written to disk (-1: never)
        self.changes = 0  # vectors added or removed since then

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
            self.changes += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            # faiss's stubs type remove_ids with the C++ IDSelector; its Python wrapper also takes an int64 id array
            self.changes += int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))  # type: ignore[arg-type]

    def search_params(
        self, selector: faiss.IDSelector | None = None, nprobe: int | None = None
    ) -> faiss.SearchParameters | None:
        # attributes set one by one: faiss's stubs do not know the keyword constructor its wrapper adds
        if self.structure.kind == "flat":
            if selector is None:
                return None
            flat = faiss.SearchParameters()
            flat.sel = selector
            return flat
        ivf = faiss.SearchParametersIVF()
        ivf.sel = selector
        ivf.nprobe = nprobe or self.structure.nprobe
        return ivf

    def search(
        self, queries: np.ndarray, k: int, vectors_for, *, selector=None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), (q, k), best first; -1 ids where fewer were found. IVF-PQ: exact re-rank."""
        params = self.search_params(selector, nprobe)
        if self.structure.kind != "ivfpq":
            return self.index.search(queries, k, params=params)
        candidates = max(self.structure.rerank or RERANK, 4 * k)
        _, found = self.index.search(queries, candidates, params=params)
        return rerank(queries, found, k, vectors_for)

    def remap_ids(self, old_ids: np.ndarray) -> bool:
        """A compaction renumbered the content ids: `old_ids` (sorted) become 0..len-1. Rewrites the ids the faiss
        index holds in place (no retraining, no vector read); False if this index type cannot be remapped."""
        old_ids = np.asarray(old_ids, dtype=np.int64)

        def renumber(ids: np.ndarray) -> np.ndarray:
            new = np.searchsorted(old_ids, ids)
            if len(ids) and (new.max() >= len(old_ids) or not np.array_equal(old_ids[new], ids)):
                raise ClipAppError("The search structure holds ids the compaction did not keep.")
            return new.astype(np.int64)

        if self.structure.kind == "flat":
            index = faiss.downcast_index(self.index)
            if not isinstance(index, faiss.IndexIDMap2):
                return False
            faiss.copy_array_to_vector(renumber(faiss.vector_to_array(index.id_map)), index.id_map)
            index.construct_rev_map()
            return True
        stored = faiss.extract_index_ivf(self.index).invlists
        invlists = None if stored is None else faiss.downcast_InvertedLists(stored)
        if not isinstance(invlists, faiss.ArrayInvertedLists):
            return False
        for list_no in range(invlists.nlist):
            size = invlists.list_size(list_no)
            if size:
                # The list's own id array (ArrayInvertedLists keeps it in memory): rewritten in place.
                ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
                ids[:] = renumber(ids.copy())
        return True

    def needs_rebuild(self, count: int, dim: int, settings: IndexSettings) -> bool:
        s = self.structure
        if s.kind == "flat":
            return choose_kind(count, dim, settings) != "flat"
        if count < settings.exact_threshold // 2 or count > 2 * s.trained_on:
            return True  # nlist and nprobe are stale, or exact search is due again
        # IVF-Flat whose float copy outgrew the budget or the compression threshold.
        return s.kind == "ivf" and choose_kind(count, dim, settings) == "ivfpq"


def rerank(queries: np.ndarray, candidates: np.ndarray, k: int, vectors_for) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of each query's candidate ids (from the stored float vectors), best k first."""
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, ids) in enumerate(zip(queries, candidates, strict=True)):
        ids = ids[ids >= 0]
        if not len(ids):
            continue
        ids = np.sort(ids)  # reads in file order
        scores = vectors_for(ids) @ query
        top = np.argsort(-scores, kind="stable")[:k]
        out_scores[row, : len(top)], out_ids[row, : len(top)] = scores[top], ids[top]
    return out_scores, out_ids


def build(
    count: int,
    dim: int,
    settings: IndexSettings,
    ids: np.ndarray,
    read_rows,
    *,
    next_id: int,
    removal_seq: int,
    vector_epoch: int = 0,
    progress=None,
) -> SearchStructure:
    """Build the structure the policy picks over the vectors of `ids` (increasing content ids).

    `read_rows(ids)` returns their float32 vectors (the store's vector file); vectors are streamed in chunks.
    """
    kind = choose_kind(count, dim, settings)
    notify = progress or (lambda done, total, message: None)
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        structure = IndexStructure(kind="flat")
    else:
        nlist = ivf_nlist_for(count, max_nlist=settings.max_nlist)
        quantizer = coarse_quantizer(nlist, dim)
        ivf: faiss.IndexIVF
        if kind == "ivf":
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            m = 0
        else:
            m = pq_m_for(count, dim, settings.max_memory)
            ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = KMEANS_ITERATIONS
        index = ivf
        rng = np.random.default_rng(count)  # seeded: the same collection gives the same index
        n_train = min(count, max(TRAIN_POINTS_PER_CENTROID * nlist, PQ_TRAIN_POINTS if m else 0))
        train_ids = np.sort(rng.choice(ids, size=n_train, replace=False))
        notify(0, count, "Training the search index")
        index.train(read_rows(train_ids))
        structure = IndexStructure(kind=kind, nlist=nlist, trained_on=count, pq_m=m, rerank=RERANK if m else 0)
    built = SearchStructure(index, structure, next_id=next_id, removal_seq=removal_seq, vector_epoch=vector_epoch)
    for start in range(0, len(ids), ADD_CHUNK):
        chunk = ids[start : start + ADD_CHUNK]
        built.add(read_rows(chunk), chunk)
        notify(min(len(ids), start + ADD_CHUNK), count, "Building the search index")
    if kind != "flat":
        target = settings.target_recall + RECALL_MARGIN
        while True:
            nprobe, recall = calibrate_nprobe(built, ids, read_rows, target=target)
            if recall >= target or kind != "ivfpq" or structure.rerank >= MAX_RERANK:
                break
            structure.rerank *= 2  # the codes are too coarse for the target: re-rank more candidates
        structure.nprobe, structure.measured_recall = nprobe, round(recall, 4)
        faiss.extract_index_ivf(index).nprobe = nprobe
    return built


def calibrate_nprobe(
    built: SearchStructure,
    ids: np.ndarray,
    read_rows,
    *,
    target: float,
    n_queries: int = CALIBRATION_QUERIES,
    k: int = CALIBRATION_K,
) -> tuple[int, float]:
    """Smallest nprobe whose recall@k (after re-rank) against exact search reaches `target`: (nprobe, recall).

    Queries are held out: a fixed sample of stored vectors that both the exact and the approximate search skip,
    so none finds itself. Recall grows with nprobe (a superset of lists probed), so double, then bisect.
    """
    rng = np.random.default_rng(0)
    query_ids = np.sort(rng.choice(ids, size=min(len(ids) - k, n_queries), replace=False))
    queries = read_rows(query_ids)
    exclude = np.zeros(len(ids), dtype=bool)
    exclude[np.searchsorted(ids, query_ids)] = True
    _, truth_ids = exact_over_ids(ids, queries, k, read_rows, exclude=exclude)
    truth = [set(row[row >= 0].tolist()) for row in truth_ids]
    batch = faiss.IDSelectorBatch(query_ids)
    selector = faiss.IDSelectorNot(batch)
    nlist = built.structure.nlist

    def recall_at(nprobe: int) -> float:
        _, found = built.search(queries, k, read_rows, selector=selector, nprobe=nprobe)
        hits = sum(len(t & set(f.tolist())) for t, f in zip(truth, found, strict=True))
        return hits / max(1, sum(len(t) for t in truth))

    measured: dict[int, float] = {}
    low, nprobe = 0, 1
    while True:
        measured[nprobe] = recall_at(nprobe)
        if measured[nprobe] >= target or nprobe >= nlist:
            break
        low, nprobe = nprobe, min(2 * nprobe, nlist)
    high = nprobe
    if measured[high] >= target:
        while high - low > 1:
            middle = (low + high) // 2
            measured[middle] = recall_at(middle)
            if measured[middle] >= target:
                high = middle
            else:
                low = middle
    return high, measured[high]


# ---------------------------------------------------------------------------------------------------------------
# The cache on disk
# ---------------------------------------------------------------------------------------------------------------
def save_cache(folder: Path, built: SearchStructure) -> None:
    """Write the structure and what it covers; the caller holds the folder lock and no write transaction."""
    name = f"faiss-{built.next_id}-{built.removal_seq}.index"
    with atomic_path(folder / name) as tmp:
        faiss.write_index(built.index, str(tmp))
    meta = {
        "file": name,
        "next_id": built.next_id,
        "removal_seq": built.removal_seq,
        "ntotal": built.ntotal,
        "vector_epoch": built.vector_epoch,
        "structure": asdict(built.structure),
    }
    with atomic_path(folder / CACHE_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    built.saved_ntotal, built.changes = built.ntotal, 0
    for entry in os.scandir(folder):  # older caches, and temp files of writers killed mid-write (we hold the lock)
        stale_temp = entry.name.startswith(".faiss") and entry.name.endswith(".tmp")
        if stale_temp or (entry.name.startswith("faiss-") and entry.name.endswith(".index") and entry.name != name):
            try:
                os.unlink(entry.path)
            except OSError:  # pragma: no cover - removed meanwhile
                pass


def remove_cache(folder: Path) -> None:
    """Delete the saved structure (its ids no longer mean anything); the caller holds the folder lock."""
    (folder / CACHE_META).unlink(missing_ok=True)
    for entry in os.scandir(folder):
        if entry.name.startswith("faiss-") and entry.name.endswith(".index"):
            Path(entry.path).unlink(missing_ok=True)


def load_cache(folder: Path, vector_epoch: int = 0) -> SearchStructure | None:
    """The saved structure, or None if there is none, it cannot be read or it belongs to another compaction
    epoch than `vector_epoch` (the caller rebuilds)."""
    try:
        meta = json.loads((folder / CACHE_META).read_text(encoding="utf-8"))
        if int(meta.get("vector_epoch", 0)) != vector_epoch:
            log.info("search cache in %s predates a compaction; rebuilding it", folder)
            return None
        index = faiss.read_index(str(folder / meta["file"]))
        structure = IndexStructure(**meta["structure"])
        if int(index.ntotal) != int(meta["ntotal"]):
            raise ValueError(f"{index.ntotal} vectors, expected {meta['ntotal']}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # RuntimeError: faiss cannot parse
        log.warning("search cache in %s is unreadable (%s); rebuilding it from the database", folder, exc)
        return None
    if structure.kind != "flat":
        faiss.extract_index_ivf(index).nprobe = structure.nprobe
    built = SearchStructure(
        index,
        structure,
        next_id=int(meta["next_id"]),
        removal_seq=int(meta["removal_seq"]),
        vector_epoch=vector_epoch,
    )
    built.saved_ntotal = built.ntotal
    return built
