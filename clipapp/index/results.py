"""The index's results as typed values, and their JSON: one search hit (`Hit`), one query's hits (`SearchResult`),
one folder sync or upload (`SyncReport`). Core module: no Gradio.

Each type's `to_dict` is the one place its JSON is made; the CLI (`--json` and its text), the /v1 HTTP API and the
web app all call it, so a hit or a report has the same shape everywhere (docs/architecture.md, "Contracts").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clipapp.images.folders import SkippedFile

SCORE_DECIMALS = 6  # float32 cosines hold ~7 significant digits; 6 decimals, as the JSON always had

# gradio_client (2.7.2, checked against a live app by tests/integration/test_search_api.py) takes any JSON object
# with a string "path" key for a file to download and replaces it with the local copy: the hit's score and id would
# be lost, and a path the server does not serve fails the whole call (403). The web app's JSON names the file
# "image" instead.
GRADIO_FILE_KEY = "image"


@dataclass(frozen=True)
class Hit:
    """One search result: a distinct image content. `path` is its first indexed path (the one shown), `aliases`
    the other paths holding the same bytes (copies, never encoded twice); `id` is its content id in the index."""

    id: int
    path: str
    score: float  # cosine similarity with the query, in [-1, 1]
    aliases: tuple[str, ...] = ()

    def to_dict(self, *, file_key: str = "path") -> dict[str, Any]:
        """{"id", "path", "score", "aliases"}; `file_key` renames "path" (see `SearchResult.for_gradio`)."""
        return {
            "id": self.id,
            file_key: self.path,
            "score": round(float(self.score), SCORE_DECIMALS),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class SearchResult:
    """The hits of one query, best first (at most k; fewer when the index is smaller or a threshold cuts them)."""

    hits: tuple[Hit, ...] = ()

    def to_dict(self, *, file_key: str = "path") -> dict[str, Any]:
        """The JSON of `clipapp search --json` and /v1/search: {"results": [{"id", "path", "score", "aliases"}]}."""
        return {"results": [hit.to_dict(file_key=file_key) for hit in self.hits]}

    def for_gradio(self) -> dict[str, Any]:
        """The web app's JSON (its /search_text and /search_image endpoints and the page's gallery): `to_dict` with
        each hit's "path" named "image", because gradio_client downloads any {"path": ...} object and would drop the
        score (GRADIO_FILE_KEY)."""
        return self.to_dict(file_key=GRADIO_FILE_KEY)


@dataclass(frozen=True)
class SyncReport:
    """What a folder sync (`sync_folder`, on one machine or on Ray) or an upload (`add_images`) did to the index."""

    added: int = 0  # paths new to the index (aliases of known content included)
    updated: int = 0  # indexed paths whose content changed
    removed: int = 0  # indexed paths whose file is gone
    skipped: tuple[SkippedFile, ...] = ()  # files that could not be indexed
    total: int = 0  # paths in the index afterwards

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `clipapp index --json`, the web app's /index_images and every other indexing path:
        {"added", "updated", "removed", "skipped": [paths], "errors": {path: why}, "total"}."""
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "skipped": [item.path for item in self.skipped],
            "errors": {item.path: item.error for item in self.skipped},
            "total": self.total,
        }
