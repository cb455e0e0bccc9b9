"""Class targets as probability rows: the common currency of mixing and the soft-target losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipapp.errors import ClipAppError


def soft_targets(target: torch.Tensor, num_classes: int, *, smoothing: float = 0.0) -> torch.Tensor:
    """Turn class indices (N,) or probability rows (N, K) into float rows (N, K) that sum to 1.

    `smoothing` moves that much probability mass onto the uniform distribution, the same definition as torch's
    `CrossEntropyLoss(label_smoothing=)`: the true class gets `1 - s + s/K`, every other class `s/K`.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ClipAppError(f"smoothing must be in [0, 1), got {smoothing}")
    if target.ndim == 1 and not target.is_floating_point():
        probs = F.one_hot(target.long(), num_classes).float()
    elif target.ndim == 2 and target.shape[1] == num_classes:
        probs = target.float()
    else:
        raise ClipAppError(
            f"targets must be class indices (N,) or probabilities (N, {num_classes}); got shape {tuple(target.shape)}"
        )
    if smoothing:
        probs = probs * (1.0 - smoothing) + smoothing / num_classes
    return probs
