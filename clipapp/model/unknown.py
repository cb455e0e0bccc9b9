""" "None of these": whether an image matches none of the labels it was classified against.

A softmax over the labels always picks one, so the labels alone cannot say "none". The method (chosen by
measurement, bench/bench_label_checks.py, docs/benchmarks.md) is a generic background vocabulary: the image's best
cosine to a label minus its mean cosine to the labels and `BACKGROUND` together, the "gap". An image of one of the
labels is much closer to that label than to the average word; an image of something else sits near the middle
of all of them. On the demo model (10 Fashion-MNIST labels, scikit-learn digits and scikit-image photo crops as the
others) the gap's AUROC was 0.91 (digits) / 0.80 (photos), against 0.87 / 0.53 for the raw best cosine and
0.81 / 0.64 for the best softmax probability; with 2-3 labels it reached 0.96-0.99. A score normalised per image
(the gap over the cosines' spread) did worse (0.78 / 0.46 with 10 labels).

An image is flagged when its gap is below the model's `Calibration.cutoff`, calibrated per model on images of its
labels (`calibrate`): the demo's is in `CALIBRATIONS`. A model without one gets `UNCALIBRATED`, whose cut-off 0
flags only images whose best label is no closer than the average word. `unknown_score` is a logistic of the
gap around the cut-off, in [0, 1]; above 0.5 means `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# Generic words that cover what the labels may not: the reference the best label must stand out from.
BACKGROUND = (
    "object",
    "thing",
    "photo",
    "picture",
    "image",
    "pattern",
    "texture",
    "background",
    "animal",
    "person",
    "face",
    "text",
    "number",
    "digit",
    "letter",
    "building",
    "plant",
    "food",
    "vehicle",
    "tool",
    "landscape",
    "sky",
    "toy",
)

# The share of images of the labels a calibration lets through as "none of these".
CALIBRATION_FLAG_RATE = 0.05


@dataclass(frozen=True)
class Calibration:
    """A model's cut-off on the gap (cosine units) and the width of the logistic that turns gaps into scores."""

    cutoff: float
    width: float

    def to_dict(self) -> dict:
        return {"cutoff": self.cutoff, "width": self.width}


# Measured by bench/bench_label_checks.py on 2,000 Fashion-MNIST *train* images with the 10 class names and the
# "simple" templates (the rates in docs/benchmarks.md are on the test split, never tuned on).
CALIBRATIONS: dict[str, Calibration] = {"demo": Calibration(cutoff=0.3160, width=0.0312)}
UNCALIBRATED = Calibration(cutoff=0.0, width=0.05)


def calibration_for(spec: str) -> Calibration:
    return CALIBRATIONS.get(spec, UNCALIBRATED)


def calibrate(gaps_of_label_images: np.ndarray, *, flag_rate: float = CALIBRATION_FLAG_RATE) -> Calibration:
    """A calibration from the gaps of images of the labels: the cut-off flags `flag_rate` of them; the width is a
    quarter of their interquartile range, so a score moves from 0.5 to ~0.73 one width below the cut-off."""
    gaps = np.asarray(gaps_of_label_images, dtype=np.float64)
    q25, q75 = np.quantile(gaps, [0.25, 0.75])
    return Calibration(cutoff=float(np.quantile(gaps, flag_rate)), width=float(max((q75 - q25) / 4, 1e-6)))


def gaps(label_cosine: np.ndarray, background_cosine: np.ndarray) -> np.ndarray:
    """(n, n_labels) and (n, n_background) cosines -> (n,) best label cosine minus the mean of all of them."""
    every = np.concatenate([label_cosine, background_cosine], axis=1)
    return (label_cosine.max(axis=1) - every.mean(axis=1)).astype(np.float32)


def scores(gap: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Gaps -> unknown scores in [0, 1]: 0.5 at the cut-off, higher for smaller gaps."""
    z = (np.asarray(gap, dtype=np.float64) - calibration.cutoff) / calibration.width
    return (1.0 / (1.0 + np.exp(np.clip(z, -50, 50)))).astype(np.float32)


@dataclass(frozen=True)
class UnknownScores:
    """Per image: `score` in [0, 1] and `flag` (score > 0.5, i.e. gap below the cut-off)."""

    score: np.ndarray  # (n,) float32
    flag: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.score)

    def select(self, rows: Sequence[int] | np.ndarray) -> "UnknownScores":
        picked = np.asarray(rows, dtype=np.int64)
        return UnknownScores(self.score[picked], self.flag[picked])


@dataclass(frozen=True)
class UnknownDetector:
    """Built once per label set (`detector`): the labels' and the background's text embeddings."""

    label_weights: np.ndarray  # (n_labels, dim)
    background_weights: np.ndarray  # (n_background, dim)
    calibration: Calibration

    def gaps(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        return gaps(features @ self.label_weights.T, features @ self.background_weights.T)

    def __call__(self, features: np.ndarray) -> UnknownScores:
        score = scores(self.gaps(features), self.calibration)
        return UnknownScores(score, score > 0.5)


def detector(
    service, labels: Sequence[str], templates=None, *, calibration: Optional[Calibration] = None
) -> UnknownDetector:
    """The detector for `labels` on `service`'s model (its calibration unless one is given); `templates` as for the
    labels' own embeddings (the background words get the same ones)."""
    from clipapp.model.prompts import DEFAULT_TEMPLATES

    templates = DEFAULT_TEMPLATES if templates is None else templates
    return UnknownDetector(
        label_weights=service.text_embeddings(list(labels), templates),
        background_weights=service.text_embeddings(list(BACKGROUND), templates),
        calibration=calibration or calibration_for(service.spec),
    )
