"""Moving duplicates aside with an undo log, and undoing it. Never deletes and never overwrites a file.

`move_files` moves each file to the same absolute path under DEST (/photos/a.jpg -> DEST/photos/a.jpg: no two files
collide and the log is readable by hand) and appends `original,moved` to DEST/clipapp-undo-<time>.csv, flushed and
fsynced before the move: after a crash every moved file is in the log (a logged row whose move did not happen is
skipped by the undo, the original being still in place). `shutil.move` copies then deletes across filesystems, so
the original is never gone before its copy is whole. `undo_moves` moves back only files inside the log's folder,
and only where nothing has taken the original's place.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipapp.errors import ClipAppError

LOG_HEADER = ("original", "moved")


@dataclass(frozen=True)
class MoveReport:
    """What `move_files` (or `undo_moves`) did: (from, to) per moved file, (path, why) per file left alone."""

    moved: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]
    log: str  # the undo log written (move) or read (undo)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `clipapp duplicates --move-to/--undo --json`."""
        return {
            "moved": [{"from": a, "to": b} for a, b in self.moved],
            "skipped": {path: why for path, why in self.skipped},
            "log": self.log,
        }


def _target(dest: Path, path: str) -> Path:
    source = Path(os.path.abspath(path))
    return dest / source.relative_to(source.anchor)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def move_files(paths: Sequence[str], dest: str | os.PathLike, progress=None) -> MoveReport:
    """Move `paths` under `dest` (created if missing), logging each move first (module docstring)."""
    folder = Path(os.path.abspath(dest))
    if folder.exists() and not folder.is_dir():
        raise ClipAppError(f"{folder} is a file; give --move-to a folder (it is created if missing).")
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"clipapp-undo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.csv"
    moved, skipped = [], []
    with open(log_path, "x", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOG_HEADER)
        for done, path in enumerate(paths, 1):
            target = _target(folder, path)
            why = _refuse_move(Path(path), target, folder)
            if why:
                skipped.append((path, why))
                continue
            writer.writerow((os.path.abspath(path), str(target)))
            handle.flush()
            os.fsync(handle.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
            moved.append((path, str(target)))
            if progress is not None:
                progress(done, len(paths), "moving duplicates")
    return MoveReport(tuple(moved), tuple(skipped), str(log_path))


def _refuse_move(source: Path, target: Path, folder: Path) -> str | None:
    if not source.is_file():
        return "not a file (gone since it was indexed?)"
    if _inside(source, folder):
        return "already inside the --move-to folder"
    if target.exists() or target.is_symlink():
        return f"{target} exists; nothing is overwritten"
    return None


def undo_moves(log: str | os.PathLike, progress=None) -> MoveReport:
    """Move every file the log lists back where it was (module docstring)."""
    log_path = Path(log)
    try:
        with open(log_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ClipAppError(f"Cannot read the undo log {log_path}: {exc.strerror or exc}.") from None
    if not rows or tuple(rows[0]) != LOG_HEADER or any(len(row) != 2 for row in rows[1:]):
        raise ClipAppError(f"{log_path} is not an undo log written by `clipapp duplicates --move-to`.")
    folder = log_path.resolve().parent
    moved, skipped = [], []
    for done, (original, where) in enumerate(rows[1:], 1):
        why = _refuse_undo(Path(original), Path(where), folder)
        if why:
            skipped.append((where, why))
            continue
        Path(original).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(where, original)
        moved.append((where, original))
        if progress is not None:
            progress(done, len(rows) - 1, "restoring")
    return MoveReport(tuple(moved), tuple(skipped), str(log_path))


def _refuse_undo(original: Path, where: Path, folder: Path) -> str | None:
    if not where.is_absolute() or not original.is_absolute():
        return "the log must hold absolute paths"
    if not _inside(where, folder):
        return f"outside the log's folder {folder}: not moved"
    if not where.is_file():
        return "not in the move folder (already restored?)"
    if original.exists() or original.is_symlink():
        return f"{original} exists again; nothing is overwritten"
    return None
