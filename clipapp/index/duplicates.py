"""Near-duplicate groups of an index: copies of one picture made by resizing, re-compression, small crops or a
brightness change, found with the index's own search structure, verified by a perceptual hash, grouped by connected
components, each group with a suggested keeper. Core module: no Gradio; reads nothing but the index and, for the
candidates only, the image files (hash, resolution).

How (docs/benchmarks.md, bench/bench_duplicates.py):
* candidates: every stored image queries the search structure with its own stored vector for its `NEIGHBOURS`
  nearest (flat: exact; IVF: `DUPLICATE_NPROBE` lists; IVF-PQ: exact re-rank on the stored vectors), and the pairs
  with cosine >= `threshold` are kept. k-NN rather than all pairs: O(n k) pairs at most, in batches of `BATCH`
  queries, so memory stays bounded at any size, and a group larger than k still joins through its chains.
* verification: a pair is kept only if the 64-bit DCT perceptual hashes (`imagehash.phash`) of its two images
  differ in at most `hash_distance` bits. The embedding alone merges different pictures that look alike to the
  model (two shirts of one cut, two photos of one scene); the hash alone misses crops. Both: the bench's figures.
* groups: scipy's connected components over the verified pairs, plus the contents indexed under several paths
  (byte-identical copies, always duplicates). Every path of a content is a member; members whose file is gone
  (moved by `--move-to`) are left out.
* keeper: largest resolution, then largest file, then earliest date (EXIF capture date, else mtime), then path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from clipapp.errors import ClipAppError

if TYPE_CHECKING:
    from clipapp.index.image_index import ImageIndex
    from clipapp.index.store import ItemRecord
    from clipapp.progress import ProgressFn

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.90  # cosine: bench/bench_duplicates.py (docs/benchmarks.md, "Near-duplicates"), demo model
DEFAULT_HASH_DISTANCE = 10  # bits of 64 (pHash): the best pair F1 of the same sweep (0.76; 14 bits: 0.54)
NEIGHBOURS = 10
# IVF lists probed per query: a copy lies next to its original, so far fewer lists than a search's calibrated nprobe
# find it. At 100k clustered 512-d vectors with 1,000 injected copies (cosine ~0.97; bench_duplicates.py --synthetic)
# nprobe 1 found 98.2% of them, 2 and 4 all, the calibrated 8 all in 3x the time (48 s against 15 s).
DUPLICATE_NPROBE = 4
BATCH = 4096  # queries per search call: (BATCH, NEIGHBOURS) results and BATCH vectors in memory at a time
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"  # as the index stores EXIF capture dates


@dataclass(frozen=True)
class DuplicateImage:
    """One member of a group: where it is and what decides the keeper."""

    path: str
    size: int  # bytes
    width: int
    height: int
    date: str  # 'YYYY-MM-DD HH:MM:SS': the EXIF capture date, else the file's mtime

    def to_dict(self, *, file_key: str = "path") -> dict[str, Any]:
        return {file_key: self.path, "size": self.size, "width": self.width, "height": self.height, "date": self.date}


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one picture, the suggested keeper first."""

    images: tuple[DuplicateImage, ...]
    similarity: float  # the lowest cosine among the pairs that joined the group (1.0: byte-identical copies only)

    @property
    def keep(self) -> str:
        return self.images[0].path

    @property
    def others(self) -> list[str]:
        """The members that are not the keeper (what `--move-to` moves)."""
        return [image.path for image in self.images[1:]]

    def to_dict(self, *, file_key: str = "path") -> dict[str, Any]:
        return {
            "keep": self.keep,
            "paths": [image.path for image in self.images],
            "similarity": round(float(self.similarity), 6),
            "images": [image.to_dict(file_key=file_key) for image in self.images],
        }


@dataclass(frozen=True)
class DuplicateReport:
    """The groups of one search, largest first, and what it looked at."""

    groups: tuple[DuplicateGroup, ...]
    threshold: float
    hash_distance: int | None  # None: no hash verification
    images: int  # distinct images searched
    candidates: int  # pairs at or above the threshold
    rejected: int  # candidate pairs the hash check refused
    seconds: float

    def to_dict(self, *, file_key: str = "path") -> dict[str, Any]:
        """The JSON of `clipapp duplicates --json` and /v1/duplicates (docs/cli.md); `file_key` renames each
        image's "path" (see `for_gradio`)."""
        return {
            "groups": [group.to_dict(file_key=file_key) for group in self.groups],
            "threshold": self.threshold,
            "hash_distance": self.hash_distance,
            "images": self.images,
            "candidates": self.candidates,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
        }

    def for_gradio(self) -> dict[str, Any]:
        """The web app's JSON: each image's "path" named "image", as `SearchResult.for_gradio` does and for the same
        reason (gradio_client would download every {"path": ...} object)."""
        from clipapp.index.results import GRADIO_FILE_KEY

        return self.to_dict(file_key=GRADIO_FILE_KEY)


def check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) <= 1.0:
        raise ClipAppError(
            f"--threshold is a cosine similarity in (0, 1], not {threshold}; the default is {DEFAULT_THRESHOLD}."
        )
    return float(threshold)


def candidate_pairs(
    index: ImageIndex, threshold: float, *, k: int = NEIGHBOURS, nprobe: int | None = DUPLICATE_NPROBE, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (m, 2) content ids a < b, their cosines (m,)): each image's k nearest at cosine >= threshold."""
    ids = index.ids()
    found_pairs, found_scores = [], []
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        scores, neighbours = index.neighbours(batch, k + 1, nprobe=nprobe)  # +1: the image finds itself
        keep = (scores >= threshold) & (neighbours >= 0) & (neighbours != batch[:, None])
        rows, cols = np.nonzero(keep)
        a, b = batch[rows], neighbours[rows, cols]
        found_pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        found_scores.append(scores[rows, cols])
        if progress is not None:
            progress(min(start + BATCH, len(ids)), len(ids), "searching for near-duplicates")
    if not found_pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    pairs, scores = np.concatenate(found_pairs), np.concatenate(found_scores)
    pairs, first = np.unique(pairs, axis=0, return_index=True)  # a pair found from both ends counts once
    return pairs.astype(np.int64), scores[first]


def perceptual_hash(path: str):
    """The 64-bit DCT hash of the image at `path` (None if it cannot be read). JPEGs are decoded at 1/8 scale or
    less (`draft`): the hash looks at a 32x32 grey thumbnail anyway."""
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("L", (128, 128))
            return imagehash.phash(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.info("no perceptual hash for %s: %s", path, exc)
        return None


def verify_pairs(index: ImageIndex, pairs: np.ndarray, hash_distance: int, progress=None) -> np.ndarray:
    """A boolean mask over `pairs`: both images readable and their perceptual hashes within `hash_distance` bits."""
    ids = np.unique(pairs)
    paths = index.paths_for_ids(ids.tolist())
    hashes = {}
    for done, content_id in enumerate(ids.tolist(), 1):
        hashes[content_id] = next(
            (h for h in (perceptual_hash(p) for p in paths.get(content_id, ()) if os.path.exists(p)) if h is not None),
            None,
        )
        if progress is not None and (done % 256 == 0 or done == len(ids)):
            progress(done, len(ids), "checking candidates")
    keep = np.zeros(len(pairs), dtype=bool)
    for row, (a, b) in enumerate(pairs.tolist()):
        ha, hb = hashes.get(a), hashes.get(b)
        keep[row] = ha is not None and hb is not None and (ha - hb) <= hash_distance
    return keep


def components(pairs: np.ndarray, singles: np.ndarray) -> list[np.ndarray]:
    """The connected components (arrays of content ids) of the graph whose edges are `pairs`, plus each id of
    `singles` not in any pair as a component of its own; components of one id come only from `singles`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.unique(np.concatenate([pairs.ravel(), np.asarray(singles, dtype=np.int64)]))
    if not len(nodes):
        return []
    local = np.searchsorted(nodes, pairs)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (local[:, 0], local[:, 1])), shape=(len(nodes),) * 2)
    count, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [nodes[members] for members in np.split(order, bounds)] if count else []


def _date(record: ItemRecord) -> str:
    return record.captured_at or datetime.fromtimestamp(record.mtime).strftime(DATE_FORMAT)


def describe(record: ItemRecord) -> DuplicateImage | None:
    """The member's size, resolution (from the file's header) and date; None if the file is gone or unreadable."""
    from PIL import Image

    try:
        with Image.open(record.path) as image:
            width, height = image.size
        size = os.path.getsize(record.path)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return DuplicateImage(path=record.path, size=size, width=width, height=height, date=_date(record))


def keeper_order(images: Sequence[DuplicateImage]) -> list[DuplicateImage]:
    """Largest resolution first, then largest file, then earliest date, then path (a stable, total order)."""
    return sorted(images, key=lambda im: (-im.width * im.height, -im.size, im.date, im.path))


def find_duplicates(
    index: ImageIndex,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    hash_distance: int | None = DEFAULT_HASH_DISTANCE,
    k: int = NEIGHBOURS,
    nprobe: int | None = DUPLICATE_NPROBE,
    progress: ProgressFn | None = None,
) -> DuplicateReport:
    """The near-duplicate groups of `index` (module docstring), largest group first."""
    threshold = check_threshold(threshold)
    started = time.perf_counter()
    pairs, scores = candidate_pairs(index, threshold, k=k, nprobe=nprobe, progress=progress)
    candidates = len(pairs)
    if hash_distance is not None and len(pairs):
        verified = verify_pairs(index, pairs, int(hash_distance), progress)
        pairs, scores = pairs[verified], scores[verified]
    lowest: dict[int, float] = {}  # content id -> the lowest cosine of its verified pairs
    for (a, b), score in zip(pairs.tolist(), scores.tolist(), strict=True):
        lowest[a], lowest[b] = min(lowest.get(a, 1.0), score), min(lowest.get(b, 1.0), score)
    groups = []
    for members in components(pairs, index.shared_content_ids()):
        images = [image for image in map(describe, index.records_for_ids(members.tolist())) if image is not None]
        if len(images) >= 2:
            similarity = min((lowest.get(int(m), 1.0) for m in members), default=1.0)
            groups.append(DuplicateGroup(tuple(keeper_order(images)), similarity))
    groups.sort(key=lambda g: (-len(g.images), g.keep))
    return DuplicateReport(
        groups=tuple(groups),
        threshold=threshold,
        hash_distance=hash_distance,
        images=len(index),
        candidates=candidates,
        rejected=candidates - len(pairs),
        seconds=time.perf_counter() - started,
    )
