"""Label errors: the images of a labelled folder whose folder label the model doubts, most suspect first.

An image is doubted when the model's best class is not its folder's; doubted images are ranked by 1 - p(given)
(cleanlab's "self_confidence", FiftyOne's mistakenness is alike). Chosen by measurement
(bench/bench_label_checks.py, docs/benchmarks.md): on 1,000 Fashion-MNIST test images with 10% of their labels
flipped, on the demo model, its precision at 100 was 93% against 86% for the normalised margin p(best) -
p(given) and 6% for ranking by max softmax (least confident first).

Memory: the pass keeps, per image, a float32 score, an int32 prediction, an int32 given class and a reference to
its path string (which `eval` already holds): about 20 bytes, 20 MB for a million images, never features or
probabilities. The CSV is written once the pass is done, sorted; the JSON keeps the top `limit`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clipapp.errors import ClipAppError

DEFAULT_LIMIT = 100  # suspects in --json and on the page; the CSV has them all
CSV_HEADER = ("image", "given", "predicted", "score")


def suspect_scores(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_labels) probabilities and (n,) given columns -> (scores, predicted columns); score = 1 - p(given) where
    the best class is not the given one, 0 (not doubted) where it is."""
    predicted = probs.argmax(axis=1)
    p_given = probs[np.arange(len(probs)), given]
    doubted = p_given < probs[np.arange(len(probs)), predicted]  # a tie with the given label is no doubt
    return np.where(doubted, 1.0 - p_given, 0.0).astype(np.float32), predicted.astype(np.int32)


@dataclass(frozen=True)
class Suspect:
    image: str
    given: str
    predicted: str
    score: float

    def to_dict(self) -> dict:
        return {"image": self.image, "given": self.given, "predicted": self.predicted, "score": self.score}


class SuspectRanker:
    """Collects scores batch by batch (`add`), then ranks (`ranked`) and writes (`write_csv`)."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._images: list[str] = []
        self._given: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._predicted: list[np.ndarray] = []

    def add(self, images: Sequence[str], probs: np.ndarray, given: np.ndarray) -> None:
        scores, predicted = suspect_scores(probs, np.asarray(given))
        self._images.extend(images)
        self._given.append(np.asarray(given, dtype=np.int32))
        self._scores.append(scores)
        self._predicted.append(predicted)

    def _order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.astype(np.float32), empty, empty
        scores, given = np.concatenate(self._scores), np.concatenate(self._given)
        predicted = np.concatenate(self._predicted)
        doubted = np.flatnonzero(scores > 0)
        order = doubted[np.argsort(-scores[doubted], kind="stable")]  # ties keep the folder's order
        return order, scores, given, predicted

    def rows(self, limit: int | None = None) -> list[int]:
        """The doubted images' positions in the order they were added, most suspect first; at most `limit`."""
        order = self._order()[0]
        return order[: max(0, int(limit))].tolist() if limit is not None else order.tolist()

    def ranked(self, limit: int | None = None) -> list[Suspect]:
        """The doubted images (score > 0), most suspect first; at most `limit`."""
        order, scores, given, predicted = self._order()
        if limit is not None:
            order = order[: max(0, int(limit))]
        return [
            Suspect(self._images[i], self.labels[given[i]], self.labels[predicted[i]], float(scores[i])) for i in order
        ]

    def write_csv(self, path: str | os.PathLike) -> int:
        """Every doubted image, most suspect first (`image,given,predicted,score`); returns the row count. Written to
        a temporary file renamed into place, so a crash never leaves half a ranking under the name."""
        target = Path(path)
        suspects = self.ranked()
        partial = target.with_name(target.name + ".partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_HEADER)
                writer.writerows((s.image, s.given, s.predicted, f"{s.score:.6g}") for s in suspects)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except OSError as exc:
            raise ClipAppError(f"Cannot write {target}: {exc.strerror or exc}.") from exc
        return len(suspects)


def rank_labelled(
    service,
    sources: Sequence,
    targets: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    names: Sequence[str],
    *,
    templates=None,
    batch_size: int = 64,
) -> SuspectRanker:
    """A fine-tune's labelled images (paths, bytes or PIL images, with class indices) ranked zero-shot against the
    class names: the page's "Check my labels" step, before training. `names` are what the ranking shows."""
    from clipapp.classify.stream import zero_shot_classifier
    from clipapp.model.prompts import DEFAULT_TEMPLATES

    if not (len(sources) == len(targets) == len(names)):
        raise ClipAppError("Every image needs a class and a name.")
    classifier = zero_shot_classifier(service, list(class_names), templates=templates or DEFAULT_TEMPLATES)
    ranker = SuspectRanker(classifier.labels)
    given = np.asarray(targets, dtype=np.int64)
    for start in range(0, len(sources), batch_size):
        stop = start + batch_size
        features = service.encode_images(list(sources[start:stop]), batch_size=batch_size)
        ranker.add(list(names[start:stop]), classifier.probabilities(features), given[start:stop])
    return ranker
