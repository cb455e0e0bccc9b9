"""Intake: labelled images from class folders, safe zips, uploads, `--class NAME=paths` lists and CSV files.

Every way in ends as one `LabelledImages`; nothing here decodes or trains.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Sequence

import numpy as np

from clipapp._compat import forward_getattr
from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS, ImageFolder, ImageSource
from clipapp.model.prompts import parse_labels

# Zip uploads: generous for a few-shot set, far below what would fill a disk or memory.
MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 512 * 1024 * 1024
MAX_ZIP_RATIO = 100  # images barely compress; a member that inflates 100x is a bomb, not a photo


@dataclass
class LabelledImages:
    """Images with class indices into `class_names`. `sources` are paths, bytes or PIL images."""

    sources: list[ImageSource]
    targets: np.ndarray
    class_names: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=len(self.class_names))


def labelled_folder(data_dir: str | os.PathLike) -> LabelledImages:
    """DATA_DIR/<class name>/<image files>; class names are the folder names, sorted."""
    folder = ImageFolder.scan(data_dir)
    return LabelledImages(
        sources=[str(p) for p in folder.paths],
        targets=np.asarray(folder.targets, dtype=np.int64),
        class_names=list(folder.class_names),
        names=[str(p) for p in folder.paths],
    )


def labelled_uploads(
    items: Sequence[tuple[ImageSource, str]],
    *,
    names: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> LabelledImages:
    """(image, class name) pairs, e.g. from uploads. Classes keep the order in which they first appear, or the
    order of `class_names` when given (every class there needs an image, every image a class there)."""
    if not items:
        raise ClipAppError("No labelled images given: upload a few images for each class.")
    labels = [" ".join(str(label).split()) for _, label in items]
    if not all(labels):
        raise ClipAppError("Every image needs a class name; one was empty.")
    if class_names is None:
        class_names = list(dict.fromkeys(labels))
    else:
        class_names = [" ".join(str(c).split()) for c in class_names]
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ClipAppError(f"Image label(s) {', '.join(map(repr, unknown[:5]))} are not among the class names.")
    parse_labels(class_names)  # same rules as zero-shot labels: unique, length, no control characters
    if len(class_names) < 2:
        raise ClipAppError(f"Found only the class {class_names[0]!r}; fine-tuning needs at least 2 classes.")
    index = {name: i for i, name in enumerate(class_names)}
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(items))]
    return LabelledImages(
        sources=[source for source, _ in items],
        targets=np.asarray([index[label] for label in labels], dtype=np.int64),
        class_names=list(class_names),
        names=names,
    )


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
        members = []
        for info in archive.infolist():
            problem = _unsafe_member(info)
            if problem:
                raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} is {problem}.")
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            members.append((info, parts))
        if len(members) > max_files:
            raise ClipAppError(f"{zip_path.name}: {len(members)} images; at most {max_files} are accepted.")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_total_bytes:
            raise ClipAppError(
                f"{zip_path.name}: {declared / 2**20:.0f} MiB uncompressed; at most "
                f"{max_total_bytes / 2**20:.0f} MiB are accepted (a zip bomb?)."
            )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        total = 0
        for info, parts in members:
            if info.compress_size and info.file_size > 2**20 and info.file_size / info.compress_size > max_ratio:
                raise ClipAppError(
                    f"{zip_path.name}: refused, entry {info.filename!r} inflates "
                    f"{info.file_size / info.compress_size:.0f}x (a zip bomb)."
                )
            target = root.joinpath(*parts).resolve()
            if root not in target.parents:
                raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} leaves the archive folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with archive.open(info) as source, open(target, "wb") as out:
                while chunk := source.read(1 << 16):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > max_total_bytes:
                        raise ClipAppError(
                            f"{zip_path.name}: refused, entry {info.filename!r} inflates beyond its "
                            "declared size or the total limit (a zip bomb)."
                        )
                    out.write(chunk)
    if not members:
        raise ClipAppError(f"{zip_path.name}: no image files inside. Expected <class name>/<image files>.")
    # A zip of a folder has that folder on top: descend while there is exactly one folder and no images.
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
            f"{zip_path.name}: images must be inside one folder per class (<class name>/<image>), "
            "not loose at the top of the archive."
        )
    return top


@contextmanager
def _maybe_extracted(path: Path) -> Iterator[Path]:
    if path.is_file() and path.suffix.lower() == ".zip":
        folder = Path(tempfile.mkdtemp(prefix="clipapp-zip-"))
        try:
            yield extract_labelled_zip(path, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield path


# ------------------------------------------------------------------------------------------------ lists of paths
def labelled_paths(
    pairs: Sequence[tuple[str | os.PathLike, str]], *, class_names: Optional[Sequence[str]] = None
) -> LabelledImages:
    """(image path, class name) pairs, e.g. search results a user assigned to classes, as `LabelledImages`.

    `~` is expanded (a quoted `--class` list reaches us unexpanded). A path listed twice under one class counts
    once; under two classes it is refused (which one is right?). Missing files are refused up front, all named in
    one message, rather than skipped halfway through a fine-tune.
    """
    seen: dict[str, str] = {}
    for path, label in pairs:
        key, label = str(Path(path).expanduser()), " ".join(str(label).split())
        if key in seen and seen[key] != label:
            raise ClipAppError(f"{key} is labelled both {seen[key]!r} and {label!r}; give each image one class.")
        seen[key] = label
    missing = [p for p in seen if not Path(p).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ClipAppError(f"Image file(s) not found: {', '.join(missing[:5])}{more}.")
    return labelled_uploads(list(seen.items()), names=list(seen), class_names=class_names)


def parse_class_spec(spec: str) -> tuple[str, list[str]]:
    """`"sneaker=a.png,b.png"` -> `("sneaker", ["a.png", "b.png"])` (the CLI's `--class`)."""
    name, sep, paths = str(spec).partition("=")
    name = " ".join(name.split())
    files = [p.strip() for p in paths.split(",") if p.strip()]
    if not sep or not name or not files:
        raise ClipAppError(f'--class {spec!r}: expected NAME=IMAGE[,IMAGE...], e.g. "sneaker=a.png,b.png".')
    return name, files


def labelled_class_lists(specs: Sequence[str]) -> LabelledImages:
    """`NAME=IMAGE,IMAGE` strings (one per class; a class may be given twice) as `LabelledImages`."""
    if not specs:
        raise ClipAppError("No classes given: pass --class NAME=IMAGE[,IMAGE...] once per class.")
    return labelled_paths([(path, name) for name, paths in map(parse_class_spec, specs) for path in paths])


def labelled_csv(csv_path: str | os.PathLike) -> LabelledImages:
    """A CSV of `path,label` rows (an optional `path,label` header line; relative paths are relative to the CSV's
    folder) as `LabelledImages`."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClipAppError(f"{csv_path}: cannot read the CSV ({exc}).") from exc
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != 2 or not row[0].strip() or not row[1].strip()]
    if bad:
        raise ClipAppError(f"{csv_path}: row(s) {', '.join(map(str, bad[:5]))} are not `path,label`.")
    if not rows:
        raise ClipAppError(f"{csv_path}: no `path,label` rows.")
    return labelled_paths([(csv_path.parent / path.strip(), label) for path, label in rows])


# The Search tab's picks (parse_selection, add_to_selection, ...) moved to clipapp/app/picks.py in 0.2.
__getattr__ = forward_getattr(__name__, ())
