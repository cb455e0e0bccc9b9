"""Early stopping on a validation metric, keeping the best weights."""

from __future__ import annotations

import math

import torch.nn as nn

from clipapp.errors import ClipAppError


class EarlyStopping:
    """Stop once the metric has not improved by more than `min_delta` for `patience` evaluations in a row.

    Helps on small datasets where validation scores peak early and then over-fitting sets in; `restore(model)`
    brings back the best weights seen (a CPU copy is kept on each improvement). NaN never counts as improvement.
    Usage: `if stopper.step(val_acc, model): break` then `stopper.restore(model)`.
    """

    def __init__(self, patience: int = 5, *, mode: str = "max", min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ClipAppError(f"Early-stopping patience must be at least 1, got {patience}.")
        if mode not in ("max", "min"):
            raise ClipAppError(f"Early-stopping mode must be 'max' or 'min', got {mode!r}.")
        if min_delta < 0:
            raise ClipAppError(f"Early-stopping min_delta must be >= 0, got {min_delta}.")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.num_steps = 0
        self.num_bad_steps = 0
        self.improved = False
        self.should_stop = False

    def _is_improvement(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def step(self, value: float, model: nn.Module | None = None) -> bool:
        """Record one evaluation; returns True when training should stop."""
        value = float(value)
        self.improved = self._is_improvement(value)
        if self.improved:
            self.best, self.best_step, self.num_bad_steps = value, self.num_steps, 0
            if model is not None:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.num_bad_steps += 1
        self.num_steps += 1
        self.should_stop = self.num_bad_steps >= self.patience
        return self.should_stop

    __call__ = step

    def restore(self, model: nn.Module) -> None:
        """Load the best weights seen back into `model` (in place)."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping has no saved state: pass the model to step()")
        model.load_state_dict(self.best_state)
