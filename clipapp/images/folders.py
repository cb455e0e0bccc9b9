"""Folder rules: which files under a folder are images (`list_image_files`), the ROOT/<class name>/<images> dataset
(`ImageFolder`), and the record of a file a batch job skipped (`SkippedFile`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class SkippedFile:
    """A file a batch job (classify, eval, an index sync) could not use, and why: unreadable, not an image, refused
    by the decoder's limits."""

    path: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error}


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, sorted; hidden files and folders are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise ClipAppError(f"{folder}: not a folder.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if not filename.startswith(".") and Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / filename)
    return sorted(found)


@dataclass(frozen=True)
class ImageFolder:
    """An image-folder dataset: ROOT/<class name>/<image files>. Class names are the sorted folder names."""

    paths: tuple[Path, ...]
    targets: tuple[int, ...]
    class_names: tuple[str, ...]

    @classmethod
    def scan(cls, root: str | os.PathLike) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise ClipAppError(f"{root}: not a folder. Expected ROOT/<class name>/<image files>.")
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        paths, targets, class_names = [], [], []
        for class_dir in class_dirs:
            files = list_image_files(class_dir)
            if not files:
                continue
            class_names.append(class_dir.name)
            paths.extend(files)
            targets.extend([len(class_names) - 1] * len(files))
        if len(class_names) < 2:
            raise ClipAppError(
                f"{root}: found {len(class_names)} class folder(s) with images; need at least 2 "
                "(ROOT/<class name>/<image files>)."
            )
        return cls(tuple(paths), tuple(targets), tuple(class_names))

    def __len__(self) -> int:
        return len(self.paths)
