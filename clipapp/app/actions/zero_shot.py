"""Zero-shot requests of a few images: classify (or classify with an adapter), the similarity matrix of images and
texts, and embeddings. Each returns a typed result whose one `to_dict` is the JSON of the CLI, the page and /v1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from clipapp.app.actions.images import MAX_TEXTS_PER_REQUEST, NamedImage, load_named_images
from clipapp.classify.stream import ClassifyReport, Prediction
from clipapp.errors import ClipAppError
from clipapp.images.decode import ImageSource
from clipapp.model.label_check import LabelWarning
from clipapp.model.prompts import DEFAULT_TEMPLATES, parse_labels
from clipapp.model.service import ClipService, ZeroShotResult

DEFAULT_TOP_K = 5


@dataclass
class Classification:
    """One classification: the scores for every image and label (probabilities and the cosines behind them, which
    the heatmap shows), the names of the images and how many labels per image the JSON lists. `to_dict` is the
    JSON the CLI, the web app and /v1 return."""

    model: str
    names: list[str]
    scores: ZeroShotResult
    top_k: int = DEFAULT_TOP_K
    warnings: Optional[list[LabelWarning]] = None  # the label check's, for zero-shot labels

    @property
    def labels(self) -> list[str]:
        return self.scores.labels

    def to_dict(self, top_k: Optional[int] = None) -> dict:
        """The JSON of the CLI's `classify` (README "Classify a whole folder or index"), made by the one
        `ClassifyReport.to_dict` that the CLI's streaming path uses too. `top_k`: default the one asked for."""
        k = max(1, int(self.top_k if top_k is None else top_k))
        unknown = self.scores.unknown
        flags = [None] * len(self.names) if unknown is None else unknown.flag.tolist()
        scores = [None] * len(self.names) if unknown is None else unknown.score.tolist()
        results = [
            Prediction(name, tuple(top), flag, score)
            for name, top, flag, score in zip(self.names, self.scores.top(k), flags, scores, strict=True)
        ]
        return ClassifyReport(
            model=self.model,
            labels=self.labels,
            multi_label=self.scores.multi_label,
            classified=len(results),
            results=results,
            warnings=self.warnings,
        ).to_dict()


def classify(
    service: ClipService,
    images: Sequence[NamedImage],
    labels: str | Sequence[str],
    *,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    top_k: int = DEFAULT_TOP_K,
    classifier=None,
    unknown: bool = True,
) -> Classification:
    """Zero-shot (or adapted, when `classifier` is an adapter) scores of every image for every label; each image is
    encoded once. `top_k`: the labels per image that `to_dict` lists. `unknown`: per image, whether it matches none
    of the labels (an adapter: unless it tuned visual blocks); zero-shot labels are checked first (`warnings`)."""
    from clipapp.model.label_check import check_labels

    pil = [item.image for item in images]
    warnings = None
    if classifier is not None:
        scores = classifier.classify(service, pil, unknown=unknown)
        model = f"{service.spec} + adapter {classifier.name}"
    else:
        parsed = parse_labels(labels)  # unusable labels are refused before any is checked or encoded
        warnings = check_labels(service, labels, templates)  # of the raw text: it also warns of empty entries
        scores = service.zero_shot(pil, parsed, templates=templates, unknown=unknown)
        model = service.spec
    names = [item.name for item in images]
    return Classification(model=model, names=names, scores=scores, top_k=int(top_k), warnings=warnings)


def parse_texts(texts: str | Sequence[str], *, limit: int = MAX_TEXTS_PER_REQUEST) -> list[str]:
    """Texts for the similarity matrix: one per line (or a list); same validation as labels."""
    if isinstance(texts, str):
        texts = texts.splitlines()
    return parse_labels(list(texts), max_labels=limit)


@dataclass
class Similarity:
    """Cosine similarity of each image to each text: `matrix[image][text]`."""

    model: str
    images: list[str]
    texts: list[str]
    matrix: list[list[float]]  # [image][text], rounded to 6 decimals

    def to_dict(self) -> dict:
        return {"model": self.model, "images": self.images, "texts": self.texts, "matrix": self.matrix}


def similarity(service: ClipService, images: Sequence[NamedImage], texts: str | Sequence[str]) -> Similarity:
    """Cosine similarity of each image to each text as written (no templates)."""
    texts = parse_texts(texts)
    matrix = service.similarity([item.image for item in images], texts)
    return Similarity(
        model=service.spec,
        images=[item.name for item in images],
        texts=texts,
        matrix=np.round(matrix.astype(float), 6).tolist(),
    )


@dataclass
class Embeddings:
    """L2-normalised embeddings of images or texts, one row per item."""

    model: str
    items: list[str]
    vectors: np.ndarray

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "dim": int(self.vectors.shape[1]),
            "items": self.items,
            "vectors": [[round(float(x), 6) for x in row] for row in self.vectors],
        }


def embed(service: ClipService, *, images: Sequence[ImageSource] = (), texts: Sequence[str] = ()) -> Embeddings:
    """Embeddings of `images` (decoded with the service's limits, named by their `name` if they have one) or of
    `texts`: one kind per call."""
    if bool(images) == bool(texts):
        raise ClipAppError("Send either images or texts to embed (one kind per request).")
    if images:
        named = load_named_images(images, limits=service.limits)
        return Embeddings(service.spec, [i.name for i in named], service.encode_images([i.image for i in named]))
    items = parse_texts(texts)
    return Embeddings(service.spec, items, service.encode_texts(items))
