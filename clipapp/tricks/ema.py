"""Exponential moving average of model weights, on timm's `ModelEmaV3`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from clipapp.errors import ClipAppError


class WeightEma:
    """EMA of all weights and buffers: evaluate the average inside `with ema.apply_to(model):`.

    Helps when the validation score is noisy from step to step (small batches, high learning rate, short
    fine-tunes): the averaged weights sit nearer the centre of the basin and usually score a bit higher.
    With `warmup`, the decay ramps up from 0 so the average is not dominated by the initial weights: that matters
    for short runs; `decay` ~0.99 suits a few hundred steps, 0.999-0.9999 long trainings.
    Call `update(model)` after each `optimizer.step()`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        decay: float = 0.99,
        warmup: bool = True,
        warmup_power: float = 0.75,
        device: torch.device | str | None = None,
    ) -> None:
        from timm.utils.model_ema import ModelEmaV3  # imported here: timm takes seconds to import

        if not 0.0 <= decay < 1.0:
            raise ClipAppError(f"decay must be in [0, 1), got {decay}")
        self._ema = ModelEmaV3(
            model,
            decay=decay,
            use_warmup=warmup,
            warmup_power=warmup_power,
            device=None if device is None else torch.device(device),
        )
        self.num_updates = 0

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model (in eval mode); can be evaluated directly."""
        return self._ema.module

    @property
    def decay(self) -> float:
        """The decay used at the last update."""
        return self._ema.get_decay(self.num_updates)

    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        self._ema.update(model, step=self.num_updates)

    @contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Load the EMA weights into `model` for the block, then put the training weights back exactly.

        Weights are copied in place, so the model's parameter objects (and the optimizer's hold on them) stay.
        """
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self._ema.module.state_dict())
        try:
            yield model
        finally:
            model.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"module": self._ema.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self._ema.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
