"""What a fine-tune returns (`FinetuneResult`, turned into JSON in `to_dict` only) and the metrics it reports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from clipapp.errors import ClipAppError
from clipapp.finetune.adapter import Adapter, _json_safe
from clipapp.finetune.config import FinetuneConfig

if TYPE_CHECKING:
    from clipapp.finetune.plan import Plan


@dataclass
class FinetuneResult:
    """What a fine-tune returns: the adapter, held-out metrics before (zero-shot) and after, curves and timings."""

    adapter: Adapter
    before: Optional[dict]
    after: Optional[dict]
    confusion_before: Optional[list[list[int]]]
    confusion_after: Optional[list[list[int]]]
    history: dict[str, list]
    validation: dict[str, Any]
    best_epoch: int
    stopped: bool
    skipped: list[str]
    notes: list[str]
    seconds: dict[str, float]
    config: FinetuneConfig
    plan: Optional[Plan] = None  # the planner's choice and estimate (None: made without the planner)

    @property
    def class_names(self) -> list[str]:
        return list(self.adapter.class_names)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "before": self.before,
                "after": self.after,
                "confusion": {"before": self.confusion_before, "after": self.confusion_after},
                "history": self.history,
                "validation": self.validation,
                "best_epoch": self.best_epoch,
                "stopped": self.stopped,
                "skipped": self.skipped,
                "notes": self.notes,
                "seconds": self.seconds,
                "class_names": self.class_names,
                "mode": self.config.mode,
                "config": self.config.to_dict(),
                "plan": None if self.plan is None else {**self.plan.to_dict(), "actual_s": self.seconds.get("total")},
            }
        )


class FinetuneStopped(ClipAppError):
    """The stop flag was set before there was anything to save."""


def metrics_from_logits(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """{"top1", "top5", "n", "loss"}: accuracy, top-5 accuracy (top-k with k = min(5, classes)), mean cross-entropy."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n = int(len(targets))
    if n == 0:
        return {"top1": math.nan, "top5": math.nan, "n": 0, "loss": math.nan}
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)))
    return {
        "top1": float((top[:, 0] == targets).mean()),
        "top5": float((top == targets[:, None]).any(1).mean()),
        "n": n,
        "loss": loss,
    }


def confusion_counts(predicted: np.ndarray, targets: np.ndarray, n_classes: int) -> list[list[int]]:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix.tolist()
