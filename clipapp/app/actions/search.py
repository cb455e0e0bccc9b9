"""Indexes and search over them: create or update an index of a folder (here or on a Ray cluster), and find the
images most like a text, an image or a stored vector. Each returns the index's typed report or result."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from clipapp.images.decode import ImageSource
from clipapp.model.service import ClipService

if TYPE_CHECKING:  # the index (faiss) is imported only by the actions that use it
    from clipapp.index import ImageIndex, SearchOptions, SearchResult, SyncReport


def sync_index(service: ClipService, index: ImageIndex, folder: str | os.PathLike, *, progress=None) -> SyncReport:
    """Bring an open index up to date with the images under `folder` (incremental): `sync_folder`'s report, whose
    `to_dict` is the JSON of docs/architecture.md ("Command line", `index`)."""
    from clipapp.index import sync_folder

    return sync_folder(index, folder, service, progress=progress)


def index_folder(
    service: ClipService,
    folder: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    progress=None,
    max_memory: Optional[int] = None,
) -> SyncReport:
    """Create or update the index at `index_path` from the images under `folder`; see `sync_index`.

    `max_memory`: bytes the search structure may hold in RAM (kept with the index; None: leave it as it is)."""
    from clipapp.index import ImageIndex

    with ImageIndex.open_or_create(index_path, service.spec, service.embed_dim) as index:
        if max_memory is not None:
            index.set_max_memory(max_memory)
            index.save()
        return sync_index(service, index, folder, progress=progress)


def index_folder_ray(
    folder: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    address: str,
    model: Optional[str] = None,
    precision: str = "auto",
    max_memory: Optional[int] = None,
) -> SyncReport:
    """`index_folder` with the images embedded on a Ray cluster (no model loads here); `precision` as the cluster
    runs it (`cluster_precision`)."""
    from clipapp.index import ImageIndex
    from clipapp.index.distributed import index_folder_ray as sync_on_ray
    from clipapp.model.device import cluster_precision
    from clipapp.model.spec import resolve_spec

    spec = resolve_spec(model)
    report = sync_on_ray(folder, index_path, address=address, spec=spec, precision=cluster_precision(precision))
    if max_memory is not None:
        with ImageIndex.open(index_path) as index:
            index.set_max_memory(max_memory)
            index.save()
            index.ensure_built()
    return report


def _options(options: Optional[SearchOptions]) -> SearchOptions:
    from clipapp.index.filters import SearchOptions

    return options if options is not None else SearchOptions()


def search_text(
    service: ClipService,
    index: ImageIndex,
    query: str,
    options: Optional[SearchOptions] = None,
    *,
    templates: str | Sequence[str] | None = None,
    allow_image_paths: bool = True,
) -> SearchResult:
    """Text (or rclip-style `a + b - c`) query -> its hits, best first. `options` (SearchOptions: k, min score,
    filter with its tag, sort; None: the defaults): see ImageIndex.search."""
    from clipapp.index import query_index

    return query_index(
        index, query, service, templates=templates, allow_image_paths=allow_image_paths, options=_options(options)
    )


def search_image(
    service: ClipService, index: ImageIndex, image: ImageSource, options: Optional[SearchOptions] = None
) -> SearchResult:
    """Images most like `image` (a path, bytes or PIL image), best first (`options`: as search_text)."""
    chosen = _options(options)  # checked before the image is encoded
    vector = service.encode_images([image])
    return index.search(vector, options=chosen)[0]


def search_vector(index: ImageIndex, vector: np.ndarray, options: Optional[SearchOptions] = None) -> SearchResult:
    """Images most like an embedding (e.g. an indexed image's own vector: the page's click-to-search)."""
    return index.search(vector, options=_options(options))[0]
