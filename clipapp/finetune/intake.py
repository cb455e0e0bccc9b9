"""Intake: labelled images from class folders, uploads, `--class NAME=paths` lists and CSV files.

Every way in ends as one `LabelledImages`; nothing here decodes or trains. Zips of class folders are unpacked by
clipapp.images.archive.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from clipapp._compat import forward_getattr
from clipapp.errors import ClipAppError
from clipapp.images.decode import ImageSource
from clipapp.images.folders import ImageFolder
from clipapp.model.prompts import parse_labels


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


# The zip names (clipapp.images.archive now) and the Search tab's picks (parse_selection, add_to_selection, ...:
# clipapp/app/picks.py, MOVED_NAMES) lived here before 0.2; kept for one release.
__getattr__ = forward_getattr(__name__, ("clipapp.images.archive",))
