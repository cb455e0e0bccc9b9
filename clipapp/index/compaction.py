"""Compaction: rewrite vectors.f32 without the rows of removed images (content ids are renumbered densely).

Removed images leave their rows in the append-only vector file; an archive that churns (phone uploads, a re-encode
after every model change) grows forever without this. Steps, all under the database's write lock (other writers
wait; readers keep reading the old file through their open descriptor):

1. write the live rows, in id order, to `vectors.f32.compact-<epoch+1>`, fsync it (killed here: the database is
   untouched and the stray file is ignored, then deleted by the next compaction);
2. one transaction renumbers contents, paths and tags (old id -> its rank), sets next_id, clears the removal log
   and sets meta `vector_epoch` = epoch+1 (killed before COMMIT: the index is as before);
3. rename the new file over vectors.f32 (killed before this: whoever opens the index next finishes the rename,
   store.finish_compaction, since the committed epoch names the file);
4. the search cache follows: its ids are renumbered in place (no retraining) and it is saved with the new epoch;
   a cache of the old epoch is never loaded.

So a kill at any point leaves the index as before or as after. Memory: one chunk of rows (CHUNK_ROWS x dim x 4
bytes) plus the id list; disk: the new file beside the old one until the rename.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipapp.index.store import VECTORS_NAME, Store, compacted_vectors_name, finish_compaction
from clipapp.progress import ProgressFn
from clipapp.storage import fsync_dir

CHUNK_ROWS = 65_536  # 128 MB of 512-d rows per read/write: large sequential I/O, bounded memory
# Suggest compaction when at least this share of the vector file is dead and it is worth a few MB.
SUGGEST_DEAD_SHARE = 0.25
SUGGEST_MIN_DEAD_ROWS = 1_000


@dataclass(frozen=True)
class CompactionReport:
    """What `ImageIndex.compact` did."""

    images: int  # live vectors (distinct images) kept
    dead_rows: int  # rows of removed images (or of killed writers) dropped
    bytes_before: int  # size of vectors.f32 before
    bytes_after: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `clipapp index --compact --json`: {"images", "dead_rows", "bytes_before", "bytes_after",
        "seconds"}."""
        return {
            "images": self.images,
            "dead_rows": self.dead_rows,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "seconds": round(self.seconds, 3),
        }


def compaction_advice(store: Store, live: int) -> str | None:
    """A sentence suggesting `--compact` when the rows no image uses (removed images, rows of a killed writer) pass
    SUGGEST_DEAD_SHARE of the vector file; None otherwise. `live`: the store's content count."""
    file_rows = os.fstat(store.vector_fd).st_size // store.row_bytes
    dead = max(0, file_rows - live)
    if dead < SUGGEST_MIN_DEAD_ROWS or dead < SUGGEST_DEAD_SHARE * file_rows:
        return None
    return (
        f"{dead} of the {file_rows} rows of {store.folder / VECTORS_NAME} belong to removed images "
        f"({dead * store.row_bytes / 1e6:.0f} MB); reclaim them with "
        f"`python -m clipapp index --index {store.folder} --compact`."
    )


def _remove_stale_files(store: Store) -> None:
    """Files of compactions killed before their commit (we hold the write lock: none is being written)."""
    committed = compacted_vectors_name(store.vector_epoch)
    for entry in os.scandir(store.folder):
        if entry.name.startswith(f"{VECTORS_NAME}.compact-") and entry.name != committed:
            os.unlink(entry.path)


def _write_live_rows(store: Store, ids: np.ndarray, target: str, progress: ProgressFn | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = 0
        for start in range(0, len(ids), CHUNK_ROWS):
            chunk = store.vectors_for(ids[start : start + CHUNK_ROWS])
            view = chunk.data.cast("B")
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            if progress is not None:
                progress(min(len(ids), start + CHUNK_ROWS), len(ids), "Compacting the vector file")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(store.folder)


_RENUMBER_SQL = """
CREATE TEMP TABLE compact_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL);
INSERT INTO compact_map SELECT id, row_number() OVER (ORDER BY id) - 1 FROM contents;
UPDATE contents SET id = -1 - (SELECT new FROM compact_map WHERE old = contents.id);
UPDATE contents SET id = -1 - id;
UPDATE paths SET content_id = (SELECT new FROM compact_map WHERE old = paths.content_id);
UPDATE tags SET content_id = -1 - (SELECT new FROM compact_map WHERE old = tags.content_id);
UPDATE tags SET content_id = -1 - content_id;
DELETE FROM removed_contents;
DROP TABLE compact_map
"""
# Ids move through negative values: an id renumbered down to a value another row still holds would break the
# primary key; negatives never collide with the old (non-negative) ids nor with each other.


def compact_store(store: Store, progress: ProgressFn | None = None) -> tuple[CompactionReport, np.ndarray]:
    """Compact the store; the caller holds its write transaction (store.begin()), which this commits. Returns the
    report and the old ids of the kept rows (old_ids[i] is now id i), for the search structure to follow."""
    started = time.perf_counter()
    if store.read_vector_epoch() != store.vector_epoch:
        store.reopen_vectors()  # another process compacted since we opened
    bytes_before = os.fstat(store.vector_fd).st_size
    ids = store.content_ids()
    epoch = store.vector_epoch + 1
    target = str(store.folder / compacted_vectors_name(epoch))
    try:
        _remove_stale_files(store)
        _write_live_rows(store, ids, target, progress)
        for statement in _RENUMBER_SQL.split(";"):
            store.db.execute(statement)
        store.set_meta("next_id", len(ids))
        store.set_meta("vector_epoch", epoch)
        store.commit()
    except BaseException:
        store.rollback()
        if os.path.exists(target) and store.read_vector_epoch() < epoch:
            os.unlink(target)
        raise
    finish_compaction(store.folder, epoch)
    store.reopen_vectors()
    report = CompactionReport(
        images=len(ids),
        dead_rows=bytes_before // store.row_bytes - len(ids),
        bytes_before=bytes_before,
        bytes_after=len(ids) * store.row_bytes,
        seconds=time.perf_counter() - started,
    )
    return report, ids
