"""Picks: the images a user collected from search results into named classes (the Search tab's state between
clicks), their `NAME=PATH,PATH` text form, and the rule that a page may name only images of the chosen index.

"Picks", not "selection": the fine-tune code selects models and epochs; these are the user's choices of images.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from clipapp.errors import ClipAppError
from clipapp.finetune.intake import LabelledImages, labelled_paths, parse_class_spec

Picks = dict[str, list[str]]  # class name -> image paths of the index, in the order picked


def parse_picks(picks) -> Picks:
    """Classes collected from search results -> {class name: [paths]}, in the order given.

    Takes a mapping, its JSON text (`{"sneaker": ["a.png"], ...}`) or `NAME=PATH,PATH` lines (the CLI's `--class`
    form, one class per line; a class may come twice). Empty text (or None) is no picks."""
    if picks is None:
        return {}
    if isinstance(picks, str):
        text = picks.strip()
        if not text:
            return {}
        if not text.startswith("{"):
            classes: Picks = {}
            for line in text.splitlines():
                if line.strip():
                    name, paths = parse_class_spec(line)
                    classes.setdefault(name, []).extend(paths)
            return classes
        try:
            picks = json.loads(text)
        except ValueError as exc:
            raise ClipAppError(f"The class selection is not valid JSON ({exc}).") from None
    if not isinstance(picks, dict) or not all(isinstance(v, (list, tuple)) for v in picks.values()):
        raise ClipAppError('The class selection must map class names to lists of paths, e.g. {"sneaker": ["a.png"]}.')
    return {" ".join(str(name).split()): [str(p) for p in paths] for name, paths in picks.items()}


def picks_text(classes: Picks) -> str:
    """{class: [paths]} -> `NAME=PATH,PATH` lines, what `parse_picks` reads back (paths hold no commas here:
    `add_picks` refuses them)."""
    return "\n".join(f"{name}={','.join(paths)}" for name, paths in classes.items() if paths)


def toggle_pick(picked: str, path: str) -> str:
    """The picked paths (one per line) with `path` added, or removed if it was there: a click in select mode."""
    lines = [line for line in (picked or "").splitlines() if line.strip()]
    return "\n".join([p for p in lines if p != path] if path in lines else [*lines, path])


def picked_paths(picked: str) -> list[str]:
    """The picked paths, one per line, blank lines dropped."""
    return [line.strip() for line in (picked or "").splitlines() if line.strip()]


def unindexed(paths: Sequence[str], index) -> list[str]:
    """The paths that are not images of `index`: a web page may name only what the index holds, never another
    file of the server."""
    return [p for p in paths if index.record(str(p)) is None]


def check_indexed(paths: Sequence[str], index) -> None:
    """Refuse, naming a few, any path that is not an image of `index`."""
    missing = unindexed(paths, index)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ClipAppError(
            f"Not images of the selected index: {', '.join(missing[:3])}{more}. Select search results of that index."
        )


def add_picks(classes: Picks, class_name: str, paths: Sequence[str], index) -> Picks:
    """New picks with `paths` (images of `index`) added to `class_name`; a path already in another class moves to
    this one (the latest choice wins)."""
    name = " ".join(str(class_name or "").split())
    paths = list(dict.fromkeys(str(p).strip() for p in paths if str(p).strip()))
    if not name:
        raise ClipAppError("Type a class name for the selected images.")
    if "=" in name:
        raise ClipAppError(f"Class name {name!r}: '=' is not allowed in a class name.")
    if not paths:
        raise ClipAppError("Select some search results first (tick 'Select mode' and click them).")
    if any("," in p for p in paths):
        raise ClipAppError("An image path with a comma cannot be collected; rename the file.")
    check_indexed(paths, index)
    chosen = set(paths)
    result = {c: [p for p in members if p not in chosen] for c, members in classes.items()}
    result[name] = list(dict.fromkeys([*result.get(name, []), *paths]))
    return {c: members for c, members in result.items() if members}


def labelled_picks(picks, index) -> LabelledImages:
    """{class: [paths of `index`]} (or its text, see `parse_picks`) as `LabelledImages`: what "Fine-tune on these"
    trains on. Every path must be an image of `index`; at least 2 classes."""
    classes = parse_picks(picks)
    if not classes:
        raise ClipAppError(
            "No classes collected: select search results, type a class name and press "
            "'Add to class', for two classes or more."
        )
    check_indexed([p for paths in classes.values() for p in paths], index)
    return labelled_paths([(p, name) for name, paths in classes.items() for p in paths], class_names=list(classes))


def check_index(index_path: str | os.PathLike) -> int:
    """Open the image index at `index_path` (the one search results were picked from) and return its size; an error
    if empty. The labelled images themselves are read from their files: partial fine-tuning needs their pixels, not
    the stored vectors."""
    from clipapp.index import ImageIndex

    size = len(ImageIndex.open(index_path))
    if not size:
        raise ClipAppError(f"Index {index_path} is empty: index a folder first (`python -m clipapp index`).")
    return size
