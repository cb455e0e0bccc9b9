"""Zip archives of class folders: safe extraction (no escaping paths, links or zip bombs) and the one
folder-or-zip context manager that fine-tuning and evaluation read labelled images through."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS

# Zip uploads: generous for a few-shot set, far below what would fill a disk or memory.
MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 512 * 1024 * 1024
MAX_ZIP_RATIO = 100  # images barely compress; a member that inflates 100x is a bomb, not a photo

_Member = tuple[zipfile.ZipInfo, tuple[str, ...]]


@contextmanager
def labelled_root(data_dir: str | os.PathLike) -> Iterator[Path]:
    """The folder itself, or a .zip of class folders extracted (`extract_labelled_zip`) to a temporary folder that
    is removed when the block ends."""
    path = Path(data_dir)
    if not (path.is_file() and path.suffix.lower() == ".zip"):
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="clipapp-zip-"))
    try:
        yield extract_labelled_zip(path, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def extract_labelled_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_files: int = MAX_ZIP_FILES,
    max_total_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_ZIP_RATIO,
) -> Path:
    """Safely extract a zip of class folders (<class>/<image>, optionally under one top folder) into `dest`.

    Refuses the whole archive, with a message naming the entry, on: absolute paths, `..` components, symbolic
    links, more than `max_files` images, more than `max_total_bytes` uncompressed, or a member inflating more than
    `max_ratio` times (a zip bomb). Sizes are counted while extracting, not trusted from the header. Only image
    files are extracted; hidden files and `__MACOSX` are skipped. Returns the folder holding the class folders.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ClipAppError(f"{zip_path.name}: not a readable zip archive ({exc}).") from exc
    with archive:
        members = _image_members(archive, zip_path.name, max_files, max_total_bytes)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        _extract(archive, members, root, zip_path.name, max_total_bytes, max_ratio)
    if not members:
        raise ClipAppError(f"{zip_path.name}: no image files inside. Expected <class name>/<image files>.")
    return _class_folders_root(root, zip_path.name)


def _unsafe_member(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a path that leaves the archive folder (..)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if "\x00" in name:
        return "a NUL byte in its name"
    return None


def _image_members(archive: zipfile.ZipFile, name: str, max_files: int, max_total_bytes: int) -> list[_Member]:
    """The image entries to extract, after refusing the archive for any unsafe entry or too many / too large."""
    members = []
    for info in archive.infolist():
        problem = _unsafe_member(info)
        if problem:
            raise ClipAppError(f"{name}: refused, entry {info.filename!r} is {problem}.")
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        members.append((info, parts))
    if len(members) > max_files:
        raise ClipAppError(f"{name}: {len(members)} images; at most {max_files} are accepted.")
    declared = sum(info.file_size for info, _ in members)
    if declared > max_total_bytes:
        raise ClipAppError(
            f"{name}: {declared / 2**20:.0f} MiB uncompressed; at most "
            f"{max_total_bytes / 2**20:.0f} MiB are accepted (a zip bomb?)."
        )
    return members


def _extract(
    archive: zipfile.ZipFile, members: list[_Member], root: Path, name: str, max_total_bytes: int, max_ratio: float
) -> None:
    """Write `members` under `root`, counting the bytes actually inflated (headers can lie)."""
    total = 0
    for info, parts in members:
        if info.compress_size and info.file_size > 2**20 and info.file_size / info.compress_size > max_ratio:
            raise ClipAppError(
                f"{name}: refused, entry {info.filename!r} inflates "
                f"{info.file_size / info.compress_size:.0f}x (a zip bomb)."
            )
        target = root.joinpath(*parts).resolve()
        if root not in target.parents:
            raise ClipAppError(f"{name}: refused, entry {info.filename!r} leaves the archive folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(info) as source, open(target, "wb") as out:
            while chunk := source.read(1 << 16):
                written += len(chunk)
                total += len(chunk)
                if written > info.file_size or total > max_total_bytes:
                    raise ClipAppError(
                        f"{name}: refused, entry {info.filename!r} inflates beyond its "
                        "declared size or the total limit (a zip bomb)."
                    )
                out.write(chunk)


def _class_folders_root(root: Path, name: str) -> Path:
    """A zip of a folder has that folder on top: descend while there is exactly one folder and no images."""
    top = root
    while True:
        entries = [p for p in top.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and len(dirs) == len(entries):
            top = dirs[0]
            continue
        break
    if any(p.is_file() for p in top.iterdir()):
        raise ClipAppError(
            f"{name}: images must be inside one folder per class (<class name>/<image>), "
            "not loose at the top of the archive."
        )
    return top
