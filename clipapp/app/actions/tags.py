"""Tagging a selection by hand: the images picked on the map (or in search results) get one tag in their index, the
same tags `classify --index --tag` writes, so `search --tag`, the Search tab's "Only tagged" and /v1/search filter
by them. `clipapp tag`, /v1/tag and the map's "Tag these" call these."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from clipapp.errors import ClipAppError

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.index import ImageIndex

MAX_TAG_CHARS = 100  # a tag is a short label shown in a dropdown with its count


@dataclass(frozen=True)
class TagReport:
    """What a tagging did: `tagged` images got `tag`; `total` images of the index carry it now."""

    tag: str
    tagged: int
    total: int

    def to_dict(self) -> dict:
        return {"tag": self.tag, "tagged": self.tagged, "total": self.total}


def check_tag(tag: str | None) -> str:
    """The tag as stored: whitespace collapsed; empty, too long or a comma (tags are listed comma separated) is a
    ClipAppError."""
    name = " ".join((tag or "").split())
    if not name:
        raise ClipAppError("Give the tag a name, e.g. --tag holidays.")
    if len(name) > MAX_TAG_CHARS:
        raise ClipAppError(f"The tag is {len(name)} characters long; at most {MAX_TAG_CHARS}.")
    if "," in name:
        raise ClipAppError(f"The tag {name!r} has a comma; give one tag at a time.")
    return name


def selected_paths(text_or_paths: str | Sequence[str] | None) -> list[str]:
    """The paths of a selection: a list, or text with one path per line (the map's "Selected images" box)."""
    lines = text_or_paths.splitlines() if isinstance(text_or_paths, str) else list(text_or_paths or ())
    paths = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not paths:
        raise ClipAppError("No images selected: select some on the map (or in the results) first.")
    return paths


def tag_in_index(index: ImageIndex, paths: str | Sequence[str] | None, tag: str) -> TagReport:
    """Tag the selected images of an open index and commit."""
    name, chosen = check_tag(tag), selected_paths(paths)
    tagged = index.add_tag(chosen, name)
    index.save()
    return TagReport(name, tagged, index.tag_counts().get(name, 0))


def tag_images(index_path: str | os.PathLike, paths: str | Sequence[str] | None, tag: str) -> TagReport:
    """`clipapp tag`: tag images of the index at `index_path` (no model needed)."""
    from clipapp.index import ImageIndex, require_index

    name, chosen = check_tag(tag), selected_paths(paths)  # before the index is opened
    require_index(index_path)
    with ImageIndex.open(index_path) as index:
        return tag_in_index(index, chosen, name)


def tag_source_images(
    sessions: SessionStore, source: str, session: str, paths: str | Sequence[str] | None, tag: str
) -> TagReport:
    """The Search tab's "Tag these": tag images of a page source's index."""
    name, chosen = check_tag(tag), selected_paths(paths)
    with sessions.searchable(source, session) as index:
        return tag_in_index(index, chosen, name)


def shared_tag(sessions: SessionStore, source: str, paths: str | Sequence[str] | None, tag: str) -> TagReport:
    """/v1/tag: tag images of one of the shared indexes (never a browser session's uploads)."""
    return tag_source_images(sessions, sessions.shared(source), "", paths, tag)
