"""Classification at dataset scale: files, folders or an index's stored vectors -> per-image top-k predictions.

The pieces (docs/cli.md, "Classify a whole folder or index"):
  expand_sources   files and folders (recursive, the file rules of `index`) -> image paths, each once
  LabelScorer      features -> probabilities over labels, the model's own way (softmax, or SigLIP's sigmoids),
                   or an adapter's; built once per run, so the text embeddings are computed once; the arithmetic
                   is clipapp/model/scoring.py's
  file_features    paths -> (paths, vectors) batches through `ClipService.encode_image_files` (threaded decoding
                   overlapped with encoding, memory bounded by a few batches); unreadable files reported
  predict_batches  (paths, vectors) batches -> `PredictionBatch`es (top-k label indices and probabilities, and
                   with `unknown=True` whether each image matches none of the labels: clipapp/model/unknown.py)
Outputs (CSV, JSONL, resume) are in clipapp/classify/predictions.py. Core: no Gradio.
`Classifier` and `predict` are the pre-0.2 names of `LabelScorer` and `predict_batches` (a DeprecationWarning).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from clipapp._compat import forward_getattr
from clipapp.errors import ClipAppError
from clipapp.images.folders import SkippedFile, list_image_files
from clipapp.model import scoring
from clipapp.model.prompts import DEFAULT_TEMPLATES, parse_labels
from clipapp.model.unknown import UnknownDetector, UnknownScores
from clipapp.progress import ProgressFn

DEFAULT_BATCH = 64
# Stored vectors are scored 8192 at a time: the (batch x labels) float32 logits stay at 33 MB for 1,000 labels
# (262 MB in the index's default 65,536-row batches), at no measurable cost in speed (bench/bench_classify.py).
VECTOR_BATCH = 8192
VectorBatches = Iterable[tuple[list[str], np.ndarray]]  # (paths, (n, dim) L2-normalised float32 vectors)


@dataclass(frozen=True)
class Prediction:
    """The top-k labels of one image, best first."""

    image: str
    top: tuple[tuple[str, float], ...]
    unknown: Optional[bool] = None  # None: not computed (--no-unknown)
    unknown_score: Optional[float] = None

    def to_dict(self) -> dict:
        payload: dict = {"image": self.image, "top": [{"label": label, "prob": prob} for label, prob in self.top]}
        if self.unknown is not None:
            payload["unknown"] = self.unknown
            payload["unknown_score"] = self.unknown_score
        return payload


@dataclass
class ClassifyReport:
    """What a run did; `to_dict` is the JSON of `classify` (docs/cli.md, "Classify a whole folder or index"), with
    `results` when they were kept."""

    model: str
    labels: list[str]
    multi_label: bool
    classified: int = 0
    resumed: int = 0  # already in the output file(s) from an earlier run, not classified again
    skipped: list[SkippedFile] = field(default_factory=list)
    results: Optional[list[Prediction]] = None
    warnings: Optional[list] = None  # LabelWarning (clipapp/model/label_check.py), when the labels were checked

    def to_dict(self) -> dict:
        payload = {
            "model": self.model,
            "multi_label": self.multi_label,
            "probabilities": "sigmoid" if self.multi_label else "softmax",
            "classified": self.classified,
            "resumed": self.resumed,
            "skipped": [s.to_dict() for s in self.skipped],
        }
        if self.results is not None:
            payload["results"] = [p.to_dict() for p in self.results]
        if self.warnings is not None:
            payload["warnings"] = [w.to_dict() for w in self.warnings]
        return payload


# -- sources ----------------------------------------------------------------------------------------------------
def expand_sources(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given and the images under folders (recursively, as `index` lists them), in order, each path once.

    A named file is taken whatever its extension (decoding says whether it is an image); a missing one is an error
    up front, before any work.
    """
    paths: dict[str, None] = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.update((str(p), None) for p in list_image_files(path))
        elif path.exists():
            paths[str(source)] = None
        else:
            raise ClipAppError(f"{source}: no such file or folder.")
    return list(paths)


# -- scoring ----------------------------------------------------------------------------------------------------
@dataclass
class LabelScorer:
    """Image features -> logits over `labels`, normalised the model's way: a softmax over the labels, or
    independent sigmoids (`multi_label`, SigLIP family). Build with `zero_shot_classifier` or `adapter_classifier`."""

    labels: list[str]
    model: str
    multi_label: bool
    logits: Callable[[np.ndarray], np.ndarray]  # (n, dim) features -> (n, n_labels) float32
    # An adapter with tuned visual blocks embeds decoded images itself; None: the model's stored/normal features.
    image_encoder: Optional[Callable[[list], np.ndarray]] = None
    # "None of these" on the model's own features (for an adapter, against its class names' text embeddings).
    unknown: Optional[UnknownDetector] = None

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return scoring.probabilities(self.logits(features), multi_label=self.multi_label)

    def top(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(label indices, probabilities), both (n, k), best first (`scoring.top_k`)."""
        return scoring.top_k(self.logits(features), k, multi_label=self.multi_label)


def zero_shot_classifier(
    service,
    labels: str | Sequence[str],
    *,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    unknown: bool = False,
) -> LabelScorer:
    """`unknown`: also say per image whether it matches none of the labels (clipapp/model/unknown.py)."""
    from clipapp.model.unknown import detector

    labels = parse_labels(labels)
    weights_t = np.ascontiguousarray(service.text_embeddings(labels, templates).T)  # once for the whole run

    def logits(features: np.ndarray) -> np.ndarray:
        # numpy's product: 1.3x torch.mm's speed here for (8192 x 512) @ (512 x 1000) on 2 cores
        return service.label_logits(np.asarray(features, dtype=np.float32) @ weights_t)

    return LabelScorer(
        labels=labels,
        model=service.spec,
        multi_label=service.multi_label,
        logits=logits,
        unknown=detector(service, labels, templates) if unknown else None,
    )


def adapter_classifier(service, adapter, *, unknown: bool = False) -> LabelScorer:
    """`unknown`: "none of these" from the features against the adapter's class names' text embeddings; not for an
    adapter with tuned visual blocks (its features are its own, off the text embeddings' calibration)."""
    from clipapp.model.unknown import detector

    adapter.check_service(service)
    encoder = None
    if adapter.visual_state:

        def encoder(images: list) -> np.ndarray:
            return adapter.image_features(service, images)

    return LabelScorer(
        labels=list(adapter.class_names),
        model=f"{service.spec} + adapter {adapter.name}",
        multi_label=False,
        logits=adapter.logits_from_features,
        image_encoder=encoder,
        unknown=detector(service, adapter.class_names) if unknown and not adapter.visual_state else None,
    )


@dataclass
class PredictionBatch:
    """The top-k of a batch of images as arrays (rows in `images` order), so writers format them in bulk."""

    images: list[str]
    labels: np.ndarray  # object array of the classifier's label strings, (n_labels,)
    indices: np.ndarray  # (n, k) into labels, best first
    probs: np.ndarray  # (n, k)
    unknown: Optional[UnknownScores] = None

    def __len__(self) -> int:
        return len(self.images)

    def select(self, rows: Sequence[int]) -> "PredictionBatch":
        picked = np.asarray(rows, dtype=np.int64)
        return PredictionBatch(
            [self.images[i] for i in picked],
            self.labels,
            self.indices[picked],
            self.probs[picked],
            None if self.unknown is None else self.unknown.select(picked),
        )

    def predictions(self) -> list[Prediction]:
        names = self.labels[self.indices].tolist()
        flags: list = [None] * len(self) if self.unknown is None else self.unknown.flag.tolist()
        scores: list = [None] * len(self) if self.unknown is None else self.unknown.score.tolist()
        return [
            Prediction(image, tuple(zip(row_names, row_probs, strict=True)), flag, score)
            for image, row_names, row_probs, flag, score in zip(
                self.images, names, self.probs.tolist(), flags, scores, strict=True
            )
        ]


def predict_batches(classifier: LabelScorer, batches: VectorBatches, *, k: int = 5) -> Iterator[PredictionBatch]:
    """One `PredictionBatch` per (paths, vectors) batch, in order."""
    labels = np.asarray(classifier.labels, dtype=object)
    for paths, vectors in batches:
        if len(paths):
            indices, probs = classifier.top(vectors, k)
            unknown = None if classifier.unknown is None else classifier.unknown(vectors)
            yield PredictionBatch(list(paths), labels, indices, probs, unknown)


# -- features ---------------------------------------------------------------------------------------------------
def file_features(
    encoded: Iterable[tuple[str, Optional[np.ndarray], Optional[str]]],
    *,
    on_skip: Callable[[SkippedFile], None],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(path, vector or None, error) from an encoder -> (paths, vectors) batches; failures go to `on_skip`."""
    paths, vectors = [], []
    for path, vector, error in encoded:
        if vector is None:
            on_skip(SkippedFile(path, error or "could not be read"))
            continue
        paths.append(path)
        vectors.append(vector)
        if len(paths) >= batch_size:
            yield paths, np.stack(vectors)
            paths, vectors = [], []
    if paths:
        yield paths, np.stack(vectors)


def encode_files(
    service, paths: Sequence[str], classifier: LabelScorer, *, batch_size: int = DEFAULT_BATCH, encoder=None
) -> Iterator[tuple[str, Optional[np.ndarray], Optional[str]]]:
    """The indexing pipeline (`encode_image_files`, or a Ray encoder's) over `paths`, through the adapter's own
    tower when it has one."""
    if encoder is not None:
        if classifier.image_encoder is not None:
            raise ClipAppError(
                "An adapter with fine-tuned visual blocks (mode partial) cannot run on Ray; "
                "run without --ray, or use a head or cache adapter."
            )
        return encoder.encode_image_files(list(paths), batch_size=batch_size)
    return service.encode_image_files(paths, batch_size=batch_size, encoder=classifier.image_encoder)


def check_index_classifier(classifier: LabelScorer) -> None:
    if classifier.image_encoder is not None:
        raise ClipAppError(
            "This adapter fine-tuned visual blocks (mode partial): it needs the pixels, which an "
            "index does not keep. Classify the image folder instead (classify FOLDER --adapter ...), "
            "or use a head or cache adapter with --index."
        )


# -- runs -------------------------------------------------------------------------------------------------------
CLASSIFYING = "classifying"  # the progress message


def _pending(paths: Iterable[str], outputs: Sequence) -> Iterator[str]:
    """Paths not yet in every output file (resume)."""
    for path in paths:
        if not outputs or not all(path in output.done for output in outputs):
            yield path


def _consume(
    classifier: LabelScorer,
    batches: VectorBatches,
    report: ClassifyReport,
    *,
    k: int,
    outputs: Sequence,
    keep_results: bool,
    progress: Optional[ProgressFn],
    total: int,
) -> ClassifyReport:
    results: Optional[list[Prediction]] = [] if keep_results else None
    if results is not None:
        report.results = results
    for batch in predict_batches(classifier, batches, k=k):
        for output in outputs:
            output.write(batch)
        if results is not None:
            results.extend(batch.predictions())
        report.classified += len(batch)
        if progress is not None:
            progress(report.classified + len(report.skipped), total, CLASSIFYING)
    return report


def classify_files(
    service,
    sources: Sequence[str | os.PathLike],
    classifier: LabelScorer,
    *,
    k: int = 5,
    outputs: Sequence = (),
    keep_results: bool = False,
    batch_size: int = DEFAULT_BATCH,
    encoder=None,
    progress: Optional[ProgressFn] = None,
) -> ClassifyReport:
    """Classify the images of `sources` (files and folders), writing each batch to `outputs` as it is done.

    Images already in every output (`resume`) are not classified again; unreadable ones end up in
    `report.skipped`. `encoder`: another encoder with `encode_image_files` (a Ray one); default the service's.
    `keep_results`: also return the predictions in `report.results` (for printing; memory grows with the count).
    """
    paths = expand_sources(sources)
    todo = list(_pending(paths, outputs))
    report = ClassifyReport(
        model=classifier.model,
        labels=classifier.labels,
        multi_label=classifier.multi_label,
        resumed=len(paths) - len(todo),
    )
    if progress is not None:
        progress(0, len(todo), CLASSIFYING)

    def skip(item: SkippedFile) -> None:
        report.skipped.append(item)
        if progress is not None:
            progress(report.classified + len(report.skipped), len(todo), CLASSIFYING)

    encoded = encode_files(service, todo, classifier, batch_size=batch_size, encoder=encoder)
    batches = file_features(encoded, on_skip=skip, batch_size=batch_size)
    return _consume(
        classifier, batches, report, k=k, outputs=outputs, keep_results=keep_results, progress=progress, total=len(todo)
    )


def classify_vectors(
    batches: VectorBatches,
    classifier: LabelScorer,
    *,
    k: int = 5,
    outputs: Sequence = (),
    keep_results: bool = False,
    progress: Optional[ProgressFn] = None,
    total: int = 0,
) -> ClassifyReport:
    """Classify stored vectors, e.g. `index.iter_vectors(every_path=True)`: one matrix product per batch, no file
    opened."""
    check_index_classifier(classifier)
    report = ClassifyReport(model=classifier.model, labels=classifier.labels, multi_label=classifier.multi_label)

    def pending() -> Iterator[tuple[list[str], np.ndarray]]:
        for paths, vectors in batches:
            if outputs:
                keep = [i for i, p in enumerate(paths) if not all(p in o.done for o in outputs)]
                report.resumed += len(paths) - len(keep)
                if len(keep) < len(paths):
                    paths, vectors = [paths[i] for i in keep], vectors[keep]
            yield paths, vectors

    return _consume(
        classifier, pending(), report, k=k, outputs=outputs, keep_results=keep_results, progress=progress, total=total
    )


@contextmanager
def ray_encoder(address: str, service, *, precision: str = "auto") -> Iterator:
    """The Ray encoder that indexing uses (clipapp/index/distributed/), for classifying files on a cluster: the same
    model as `service` on every actor; results come back as batches finish, in any order. Text embeddings and
    scoring stay in this process."""
    import shutil
    import tempfile

    from clipapp.index.distributed import LazySession, RayEncoder, import_ray

    import_ray()
    shards = Path(tempfile.mkdtemp(prefix="clipapp-classify-shards-"))
    session = LazySession(address, None)
    try:
        from clipapp.model.device import cluster_precision  # one precision on every node (as in index --ray)

        yield RayEncoder(
            spec=service.spec,
            dim=service.embed_dim,
            num_actors=None,
            precision=cluster_precision(precision),
            shard_dir=shards,
            session=session,
        )
    finally:
        session.close()
        shutil.rmtree(shards, ignore_errors=True)


__getattr__ = forward_getattr(__name__, ())  # names before 0.2 (Classifier, predict): _compat.MOVED_NAMES
