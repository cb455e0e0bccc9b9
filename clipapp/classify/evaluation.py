"""`eval`: accuracy on a labelled folder (DATA_DIR/<class>/<images>, or a .zip of one), streamed the way
`classify` streams (clipapp/classify/stream.py), so memory stays bounded whatever the size: per batch only counts
are kept (top-1/top-5 hits, a confusion matrix), never the features or logits of the whole set.
With `suspects`, the images whose folder label the model doubts are ranked too (clipapp/classify/suspects.py:
some 20 bytes per image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from clipapp.classify.stream import (
    DEFAULT_BATCH,
    LabelScorer,
    adapter_classifier,
    encode_files,
    file_features,
    zero_shot_classifier,
)
from clipapp.classify.suspects import DEFAULT_LIMIT, SuspectRanker
from clipapp.errors import ClipAppError
from clipapp.images.archive import labelled_root
from clipapp.images.folders import ImageFolder, SkippedFile
from clipapp.model import scoring
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.progress import ProgressFn


@dataclass
class EvalResult:
    """Accuracy of one model (or adapter) on a labelled folder; `to_dict` is the JSON of `eval`."""

    model: str
    class_names: list[str]
    confusion: np.ndarray  # (n_classes, n_classes) counts: row = true class, column = predicted
    top5_hits: int
    top5_k: int  # top-5 means top-min(5, n_classes)
    # per true class: the adapter's best class was none of the folder classes (a miss with no column in the matrix)
    outside_by_class: np.ndarray  # (n_classes,) counts
    skipped: list[SkippedFile] = field(default_factory=list)
    suspects: Optional[SuspectRanker] = None  # with evaluate_folder(..., suspects=True)
    suspects_limit: int = DEFAULT_LIMIT  # how many the JSON lists, most suspect first

    @property
    def n(self) -> int:
        return int(self.confusion.sum() + self.outside_by_class.sum())

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else float("nan")

    @property
    def top5(self) -> float:
        return float(self.top5_hits / self.n) if self.n else float("nan")

    def per_class(self) -> list[dict]:
        totals = self.confusion.sum(axis=1) + self.outside_by_class
        return [
            {"class": name, "n": int(total), "top1": float(self.confusion[i, i] / total) if total else None}
            for i, (name, total) in enumerate(zip(self.class_names, totals, strict=True))
        ]

    def to_dict(self) -> dict:
        payload = {
            "model": self.model,
            "top1": self.top1,
            "top5": self.top5,
            "n": self.n,
            "per_class": self.per_class(),
            "class_names": list(self.class_names),
            "confusion": self.confusion.tolist(),
            "skipped": [s.to_dict() for s in self.skipped],
        }
        if self.suspects is not None:
            payload["suspects"] = [s.to_dict() for s in self.suspects.ranked(self.suspects_limit)]
        return payload


def _classifier_for(service, class_names: Sequence[str], adapter, templates) -> tuple[LabelScorer, np.ndarray]:
    """The classifier and, per folder class, its column in the classifier's labels."""
    if adapter is None:
        return zero_shot_classifier(service, list(class_names), templates=templates), np.arange(len(class_names))
    classifier = adapter_classifier(service, adapter)
    missing = [c for c in class_names if c not in adapter.class_names]
    if missing:
        raise ClipAppError(
            f"Folder class(es) {', '.join(map(repr, missing[:5]))} are not classes of adapter "
            f"{adapter.name!r} ({', '.join(adapter.class_names[:10])})."
        )
    return classifier, np.array([adapter.class_names.index(c) for c in class_names])


def evaluate_folder(
    service,
    data_dir: str | os.PathLike,
    adapter=None,
    *,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    batch_size: int = DEFAULT_BATCH,
    progress: Optional[ProgressFn] = None,
    encoder=None,
    suspects: bool = False,
    suspects_limit: int = DEFAULT_LIMIT,
) -> EvalResult:
    """Top-1, top-5, per-class accuracy and the confusion matrix on DATA_DIR/<class>/<images> (or a .zip).

    Zero-shot on the folder names, or with `adapter`, whose classes must include every folder name (an image counts
    as right when the adapter's best class is its folder's; the confusion matrix has the folder classes, with
    predictions of other adapter classes counted in no column but as misses). Unreadable images are skipped
    (listed, not counted in n). `encoder`: another encoder with `encode_image_files` (a Ray one).
    `suspects`: also rank the images whose folder label the model doubts (`result.suspects`; the JSON lists the
    first `suspects_limit`).
    """
    with labelled_root(data_dir) as root:
        data = ImageFolder.scan(root)
        classifier, columns = _classifier_for(service, data.class_names, adapter, templates)
        target_of = {str(p): t for p, t in zip(data.paths, data.targets, strict=True)}
        n_classes, k = len(data.class_names), min(5, len(classifier.labels))
        column_to_class = np.full(len(classifier.labels), -1)
        column_to_class[columns] = np.arange(n_classes)
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        result = EvalResult(
            model=classifier.model,
            class_names=list(data.class_names),
            confusion=confusion,
            top5_hits=0,
            top5_k=k,
            outside_by_class=np.zeros(n_classes, dtype=np.int64),
            suspects=SuspectRanker(classifier.labels) if suspects else None,
            suspects_limit=suspects_limit,
        )
        done = 0

        def skip(item: SkippedFile) -> None:
            nonlocal done
            result.skipped.append(item)
            done += 1

        paths = [str(p) for p in data.paths]
        encoded = encode_files(service, paths, classifier, batch_size=batch_size, encoder=encoder)
        for batch_paths, vectors in file_features(encoded, on_skip=skip, batch_size=batch_size):
            targets = np.array([target_of[p] for p in batch_paths])
            logits = classifier.logits(vectors)
            top, _ = scoring.top_k(logits, k, multi_label=classifier.multi_label)
            if result.suspects is not None:
                probs = scoring.probabilities(logits, multi_label=classifier.multi_label)
                result.suspects.add(batch_paths, probs, columns[targets])
            predicted = column_to_class[top[:, 0]]
            inside = predicted >= 0
            np.add.at(confusion, (targets[inside], predicted[inside]), 1)
            np.add.at(result.outside_by_class, targets[~inside], 1)
            result.top5_hits += int((top == columns[targets][:, None]).any(axis=1).sum())
            done += len(batch_paths)
            if progress is not None:
                progress(done, len(paths), "evaluating")
    if result.n == 0:
        raise ClipAppError(
            f"{data_dir}: no readable images"
            + (f" ({len(result.skipped)} unreadable: {result.skipped[0].error})" if result.skipped else ".")
        )
    return result
