"""Gradient-norm clipping, on `torch.nn.utils.clip_grad_norm_`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


def clip_gradients(
    parameters: nn.Module | Iterable[torch.Tensor],
    max_norm: float | None,
    *,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale gradients so their total norm is at most `max_norm`; returns the norm before clipping.

    Helps training stability with high learning rates, small batches, fp16 or transformers (loss spikes from
    a single bad batch). Call between `backward()` (and `scaler.unscale_(optimizer)` under AMP) and `step()`.
    `max_norm=None` only measures the norm, which is worth logging either way.
    """
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    limit = float("inf") if max_norm is None else float(max_norm)
    total = nn.utils.clip_grad_norm_(params, limit, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite)
    return float(total)
