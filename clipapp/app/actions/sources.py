"""The server's indexes, named by source (the examples, an allowed folder, a session's uploads), as the Search tab
and /v1/search use them: build or update one, search it, list its tags, and collect picked results into classes.

`session` is the browser session ("" for none: the shared indexes only). Typed in, typed out; no Gradio here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from clipapp.app.actions.images import load_named_images
from clipapp.app.actions.search import search_image, search_text, search_vector
from clipapp.app.picks import Picks, add_picks, labelled_picks, parse_picks
from clipapp.errors import ClipAppError
from clipapp.images.decode import ImageSource
from clipapp.model.prompts import DEFAULT_TEMPLATES

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.finetune.intake import LabelledImages
    from clipapp.index import SearchOptions, SearchResult, SyncReport


@dataclass
class SourceUpdate:
    """An index brought up to date, and the uploads refused on the way (each with why)."""

    report: SyncReport
    refused_uploads: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """`SyncReport.to_dict`, with "refused_uploads" when some were refused."""
        return {**self.report.to_dict(), **({"refused_uploads": self.refused_uploads} if self.refused_uploads else {})}


def update_source(
    sessions: SessionStore,
    source: str,
    session: str,
    uploads: Sequence[str] = (),
    *,
    names: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> SourceUpdate:
    """Store `uploads` (files, named `names`) in the session's "my uploads", then update `source`'s index."""
    from clipapp.app.sessions import MY_UPLOADS

    refused: list[str] = []
    if uploads:
        if source != MY_UPLOADS:
            raise ClipAppError("Uploaded images go to the 'my uploads' index: choose it first.")
        refused = sessions.store_uploads(session, list(uploads), names=names)
    return SourceUpdate(sessions.update(source, session, progress=progress), refused)


def search_source_text(
    sessions: SessionStore,
    source: str,
    session: str,
    query: str,
    options: Optional[SearchOptions] = None,
    *,
    templates: str = DEFAULT_TEMPLATES,
) -> SearchResult:
    """A text query over `source`'s index (`options`: see search_text). Image terms (`img:PATH`) are refused: a
    caller of the server must not make it read its own files."""
    with sessions.searchable(source, session) as index:
        return search_text(sessions.service, index, query, options, templates=templates, allow_image_paths=False)


def search_source_image(
    sessions: SessionStore, source: str, session: str, image: ImageSource, options: Optional[SearchOptions] = None
) -> SearchResult:
    """The images of `source` most like an uploaded image."""
    with sessions.searchable(source, session) as index:
        return search_image(sessions.service, index, image, options)


def search_like_indexed(
    sessions: SessionStore, source: str, session: str, path: str, options: Optional[SearchOptions] = None
) -> SearchResult:
    """The images of `source` most like one of its own images (a clicked result), from its stored vector."""
    with sessions.searchable(source, session) as index:
        vector = index.vector_for_path(path)
        if vector is None:
            raise ClipAppError("That image is no longer in the index; search again.")
        return search_vector(index, vector, options)


def source_tags(sessions: SessionStore, source: str, session: str) -> dict[str, int]:
    """Every tag of `source`'s index with its image count."""
    with sessions.searchable(source, session) as index:
        return index.tag_counts()


def search_shared(
    sessions: SessionStore,
    source: str,
    *,
    query: Optional[str] = None,
    image: Optional[ImageSource] = None,
    options: Optional[SearchOptions] = None,
    templates: str = DEFAULT_TEMPLATES,
) -> SearchResult:
    """/v1/search: a text query or an image (decoded here, with the service's limits, after the checks) over one of
    the shared indexes (never a session's uploads)."""
    sessions.shared(source)
    if bool(query) == (image is not None):
        raise ClipAppError("Send either a text query or an image to search by.")
    if query:
        return search_source_text(sessions, source, "", query, options, templates=templates)
    assert image is not None  # checked above: exactly one of query and image
    picture = load_named_images([image], limits=sessions.service.limits)[0].image
    return search_source_image(sessions, source, "", picture, options)


def pick_into_class(
    sessions: SessionStore, source: str, session: str, picks: str | Picks | None, class_name: str, paths: Sequence[str]
) -> Picks:
    """The picks with `paths` (images of `source`'s index) added to `class_name` (see `picks.add_picks`)."""
    with sessions.searchable(source, session) as index:
        return add_picks(parse_picks(picks), class_name, paths, index)


def labelled_source_picks(
    sessions: SessionStore, source: str, session: str, picks: str | Picks | None
) -> LabelledImages:
    """The picks as labelled images to fine-tune on (at most `MAX_PAGE_IMAGES`), every path checked to be an image of
    `source`'s index."""
    from clipapp.app.actions.finetune import check_page_size

    with sessions.searchable(source, session) as index:
        data = labelled_picks(picks, index)
    check_page_size(len(data), "selected")
    return data
