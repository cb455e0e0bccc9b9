"""Near-duplicates of an index: find the groups (of an index folder, or of one of the server's indexes), write them
as CSV, move the non-keepers aside with an undo log, undo that. The work lives in clipapp/index (duplicates.py,
moves.py); these give the CLI, /v1/duplicates and the Search tab one call each with typed results."""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.index.duplicates import DuplicateReport
    from clipapp.index.moves import MoveReport
    from clipapp.progress import ProgressFn

CSV_HEADER = ("group", "keep", "path", "size", "width", "height", "date", "similarity")


def find_duplicates(
    index_path: str | os.PathLike, *, threshold: Optional[float] = None, progress: ProgressFn | None = None
) -> DuplicateReport:
    """The near-duplicate groups of the index at `index_path` (no model needed: the stored vectors are used)."""
    from clipapp.index import ImageIndex, require_index
    from clipapp.index.duplicates import DEFAULT_THRESHOLD
    from clipapp.index.duplicates import find_duplicates as find

    require_index(index_path)
    with ImageIndex.open(index_path) as index:
        return find(index, threshold=DEFAULT_THRESHOLD if threshold is None else threshold, progress=progress)


def source_duplicates(
    sessions: SessionStore, source: str, session: str, *, threshold: Optional[float] = None
) -> DuplicateReport:
    """The near-duplicate groups of one of the server's indexes (the Search tab's source; /v1 passes no session)."""
    from clipapp.index.duplicates import DEFAULT_THRESHOLD
    from clipapp.index.duplicates import find_duplicates as find

    with sessions.searchable(source, session) as index:
        return find(index, threshold=DEFAULT_THRESHOLD if threshold is None else threshold)


def shared_duplicates(sessions: SessionStore, source: str, *, threshold: Optional[float] = None) -> DuplicateReport:
    """/v1/duplicates: the groups of one of the shared indexes (never a browser session's uploads)."""
    return source_duplicates(sessions, sessions.shared(source), "", threshold=threshold)


def write_duplicates_csv(report: DuplicateReport, path: str | os.PathLike) -> None:
    """One row per member: group number (from 1), keeper of the group (yes/no), path, size, resolution, date."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for number, group in enumerate(report.groups, 1):
            for image in group.images:
                keep = "yes" if image.path == group.keep else "no"
                writer.writerow(
                    (number, keep, image.path, image.size, image.width, image.height, image.date, group.similarity)
                )


def move_duplicates(
    report: DuplicateReport, dest: str | os.PathLike, *, progress: ProgressFn | None = None
) -> MoveReport:
    """Move every group's non-keepers under `dest`, with an undo log there (clipapp/index/moves.py)."""
    from clipapp.index.moves import move_files

    return move_files([path for group in report.groups for path in group.others], dest, progress)


def undo_duplicate_moves(log: str | os.PathLike, *, progress: ProgressFn | None = None) -> MoveReport:
    """Put back the files an undo log lists."""
    from clipapp.index.moves import undo_moves

    return undo_moves(log, progress)
