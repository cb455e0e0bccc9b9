"""Keeping an index over years: compact it, back it up while in use, export it to / import it from clip-retrieval's
embedding-folder layout. Thin: the work and its crash safety live in clipapp/index (compaction.py, backup.py,
interchange.py); these give the CLI (and any later page or route) one call each with typed results."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from clipapp.errors import ClipAppError

if TYPE_CHECKING:
    from clipapp.index import BackupReport, CompactionReport, ExportReport, SyncReport
    from clipapp.model.service import ClipService
    from clipapp.progress import ProgressFn


def compact_index(index_path: str | os.PathLike, *, progress: ProgressFn | None = None) -> CompactionReport:
    """Rewrite the index's vector file without the rows of removed images."""
    from clipapp.index import ImageIndex

    with ImageIndex.open(index_path) as index:
        return index.compact(progress)


def backup_index(
    index_path: str | os.PathLike, dest: str | os.PathLike, *, progress: ProgressFn | None = None
) -> BackupReport:
    """A consistent copy of the index in the new folder `dest`, while others may be writing to it."""
    from clipapp.index import backup_index as backup

    return backup(index_path, dest, progress)


def export_index(
    index_path: str | os.PathLike, dest: str | os.PathLike, fmt: str, *, progress: ProgressFn | None = None
) -> ExportReport:
    """The index as an embedding folder (img_emb/*.npy + metadata/*.parquet or .jsonl) in the new folder `dest`."""
    from clipapp.index import export_index as export
    from clipapp.index import require_index

    require_index(index_path)
    return export(index_path, dest, fmt, progress=progress)


def import_embeddings(
    service: ClipService,
    folder: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
) -> SyncReport:
    """Create or extend the index at `index_path` (model: the service's) from an embedding folder; encodes nothing."""
    from clipapp.index import ImageIndex
    from clipapp.index import import_embeddings as load

    if not os.path.isdir(folder):
        raise ClipAppError(f"{folder} is not a folder; give an embedding folder (img_emb/ + metadata/).")
    with ImageIndex.open_or_create(index_path, service.spec, service.embed_dim) as index:
        return load(index, folder, progress=progress)
