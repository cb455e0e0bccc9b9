"""The app's operations as plain functions over a ClipService, returning typed results (or JSON-ready dicts).

The CLI, the /v1 API and the UI turn each result into JSON with its one `to_dict`, so all give the same answers by
construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from PIL import Image

from clipapp.classify.stream import ClassifyReport, Prediction
from clipapp.errors import ClipAppError
from clipapp.images.decode import DEFAULT_LIMITS, ImageLimits, ImageSource, load_image
from clipapp.model.prompts import DEFAULT_TEMPLATES, parse_labels
from clipapp.model.service import ClipService, ZeroShotResult

if TYPE_CHECKING:  # the index (faiss) is imported only by the actions that use it
    from clipapp.index import ImageIndex, SearchResult, SyncReport

MAX_IMAGES_PER_REQUEST = 64
MAX_TEXTS_PER_REQUEST = 200
DEFAULT_TOP_K = 5


def too_many_images_message(count: int, limit: int = MAX_IMAGES_PER_REQUEST) -> str:
    """Why a request stops at `limit` images, and how to classify any number (the command line streams them)."""
    return (
        f"{count} images given; one request takes at most {limit}. To classify any number of images, put them "
        'in a folder and run: python -m clipapp classify FOLDER --labels "cat,dog,..." --csv predictions.csv '
        "(it streams the folder, writes a row per image as it goes, and --resume continues after a stop)."
    )


@dataclass
class NamedImage:
    name: str
    image: Image.Image


def load_named_images(
    sources: Sequence[ImageSource],
    *,
    names: Optional[Sequence[str]] = None,
    limit: int = MAX_IMAGES_PER_REQUEST,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[NamedImage]:
    """Decode every source, or fail on the first bad one with a message naming it (`limits`: the service's)."""
    if not sources:
        raise ClipAppError("No images given: upload or name at least one image.")
    if len(sources) > limit:
        raise ClipAppError(too_many_images_message(len(sources), limit))
    names = (
        list(names)
        if names is not None
        else [
            str(getattr(s, "name", s)) if not isinstance(s, Image.Image) else f"image {i + 1}"
            for i, s in enumerate(sources)
        ]
    )
    return [NamedImage(name, load_image(source, limits=limits)) for name, source in zip(names, sources, strict=True)]


@dataclass
class Classification:
    """One classification: the scores for every image and label (probabilities and the cosines behind them, which
    the heatmap shows), and the names of the images. `to_dict` is the JSON the CLI, the web app and /v1 return."""

    model: str
    names: list[str]
    scores: ZeroShotResult

    @property
    def labels(self) -> list[str]:
        return self.scores.labels

    def to_dict(self, top_k: int = DEFAULT_TOP_K) -> dict:
        """The JSON of the CLI's `classify` (docs/cli.md, "Classify a whole folder or index"), made by the one
        `ClassifyReport.to_dict` that the CLI's streaming path uses too."""
        results = [
            Prediction(name, tuple(top))
            for name, top in zip(self.names, self.scores.top(max(1, int(top_k))), strict=True)
        ]
        return ClassifyReport(
            model=self.model,
            labels=self.labels,
            multi_label=self.scores.multi_label,
            classified=len(results),
            results=results,
        ).to_dict()


def classification(
    service: ClipService,
    images: Sequence[NamedImage],
    labels: str | Sequence[str],
    *,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    classifier=None,
) -> Classification:
    """Zero-shot (or adapted, when `classifier` is an adapter) scores of every image for every label; each image is
    encoded once."""
    pil = [item.image for item in images]
    if classifier is not None:
        scores = classifier.classify(service, pil)
        model = f"{service.spec} + adapter {classifier.name}"
    else:
        scores = service.zero_shot(pil, parse_labels(labels), templates=templates)
        model = service.spec
    return Classification(model=model, names=[item.name for item in images], scores=scores)


def classify(
    service: ClipService,
    images: Sequence[NamedImage],
    labels: str | Sequence[str],
    *,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    top_k: int = DEFAULT_TOP_K,
    classifier=None,
) -> dict:
    """Zero-shot (or adapted) top-k labels per image: `classification(...).to_dict(top_k)`."""
    return classification(service, images, labels, templates=templates, classifier=classifier).to_dict(top_k)


def parse_texts(texts: str | Sequence[str], *, limit: int = MAX_TEXTS_PER_REQUEST) -> list[str]:
    """Texts for the similarity matrix: one per line (or a list); same validation as labels."""
    if isinstance(texts, str):
        texts = texts.splitlines()
    return parse_labels(list(texts), max_labels=limit)


def similarity(service: ClipService, images: Sequence[NamedImage], texts: str | Sequence[str]) -> dict:
    """Cosine similarity of each image to each text: {"model", "images", "texts", "matrix"}."""
    texts = parse_texts(texts)
    matrix = service.similarity([item.image for item in images], texts)
    return {
        "model": service.spec,
        "images": [item.name for item in images],
        "texts": texts,
        "matrix": np.round(matrix.astype(float), 6).tolist(),
    }


# -- search ---------------------------------------------------------------------------------------------------------
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


def search_text(
    service: ClipService,
    index: ImageIndex,
    query: str,
    *,
    k: int = 10,
    threshold: Optional[float] = None,
    templates: str | Sequence[str] | None = None,
    allow_image_paths: bool = True,
    tag: Optional[str] = None,
) -> SearchResult:
    """Text (or rclip-style `a + b - c`) query -> its hits, best first. `tag`: only images tagged with this label."""
    from clipapp.index import query_index

    return query_index(
        index,
        query,
        service,
        k=k,
        threshold=threshold,
        templates=templates,
        allow_image_paths=allow_image_paths,
        tag=tag,
    )


def search_image(
    service: ClipService,
    index: ImageIndex,
    image: ImageSource,
    *,
    k: int = 10,
    threshold: Optional[float] = None,
    tag: Optional[str] = None,
) -> SearchResult:
    """Images most like `image` (a path, bytes or PIL image), best first."""
    vector = service.encode_images([image])
    return index.search(vector, k=k, threshold=threshold, tag=tag)[0]


def search_vector(
    index: ImageIndex, vector: np.ndarray, *, k: int = 10, threshold: Optional[float] = None
) -> SearchResult:
    """Images most like an embedding (e.g. an indexed image's own vector: the page's click-to-search)."""
    return index.search(vector, k=k, threshold=threshold)[0]
