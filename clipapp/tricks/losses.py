"""Classification losses for small, noisy or imbalanced label sets.

Label smoothing lives in the targets (`soft_targets(smoothing=)`), read by torch's own `CrossEntropyLoss`.
Multi-class softmax focal loss and the class-balanced loss (Cui et al. 2019) are hand-written: torchvision only
ships the sigmoid focal loss, and timm has neither. All losses take class indices (N,) or probability rows (N, K),
so they compose with mixup.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp.errors import ClipAppError
from clipapp.tricks.targets import soft_targets

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ClipAppError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class softmax focal loss: `-alpha_y * (1 - p_y)**gamma * log p_y` per sample.

    With probability-row targets: `-sum_k alpha_k * t_k * (1 - p_k)**gamma * log p_k`.
    `gamma = 0` and no `alpha` is exactly cross-entropy. `mean` is the plain mean over samples (as in the paper),
    not torch's weight-normalised mean.
    """
    if gamma < 0:
        raise ClipAppError(f"gamma must be >= 0, got {gamma}")
    logp = F.log_softmax(logits, dim=-1)
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=logp.dtype, device=logp.device)
    if target.is_floating_point():  # probability rows (mixup / smoothed)
        probs = soft_targets(target, logits.shape[-1]).to(logp.dtype)
        # clamp: 1 - p can round slightly below 0, and 0**gamma must stay finite for gamma < 1
        per_class = -probs * (1.0 - logp.exp()).clamp(min=0).pow(gamma) * logp
        if alpha is not None:
            per_class = per_class * alpha
        loss = per_class.sum(-1)
    else:
        logpt = logp.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
        loss = -(1.0 - logpt.exp()).clamp(min=0).pow(gamma) * logpt
        if alpha is not None:
            loss = loss * alpha[target.long()]
    return _reduce(loss, reduction)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) for single-label multi-class classification (softmax).

    Helps with class imbalance and many easy examples: the `(1 - p)**gamma` factor down-weights samples the
    model already gets right so the gradient comes from the hard ones. `gamma` 1-2 is typical; `alpha` is an
    optional per-class weight (e.g. `class_balanced_weights`).
    """

    alpha: torch.Tensor | None  # a buffer (moves with .to()); typed here, nn.Module's __getattr__ is not

    def __init__(
        self,
        gamma: float = 2.0,
        *,
        alpha: torch.Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.reduction = reduction
        # a buffer so .to(device) moves it with the module
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction)


def class_balanced_weights(
    samples_per_class: Sequence[int] | np.ndarray | torch.Tensor, beta: float = 0.9999
) -> torch.Tensor:
    """Per-class weights from the effective number of samples: `(1 - beta) / (1 - beta**n)`, normalised to sum K.

    `beta` near 1 (0.999-0.9999) approaches inverse-frequency weighting; `beta = 0` gives all ones. A class
    with no samples is counted as one: it never appears as a target, and this keeps the weights finite.
    """
    if not 0.0 <= beta < 1.0:
        raise ClipAppError(f"beta must be in [0, 1), got {beta}")
    counts = torch.as_tensor(samples_per_class, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts < 0).any()):
        raise ClipAppError("samples_per_class must be a non-empty list of non-negative counts")
    effective = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts.clamp(min=1))
    weights = (1.0 - beta) / effective
    return (weights / weights.sum() * counts.numel()).float()


class ClassBalancedLoss(nn.Module):
    """Class-balanced loss (Cui et al. 2019): each sample weighted by its class's `class_balanced_weights`.

    Helps on long-tailed data where re-weighting by raw inverse frequency over-corrects. `loss_type`:
    - `softmax`: weighted softmax cross-entropy;
    - `sigmoid`: weighted binary cross-entropy on one-vs-all logits, summed over classes (the paper's form);
    - `focal`: weighted softmax focal loss with `gamma` (the paper uses a sigmoid focal; softmax matches
      `FocalLoss` and single-label data).
    Probability-row targets use the expected weight `sum_k t_k w_k`. `mean` is the plain mean over samples.
    """

    weights: torch.Tensor  # a buffer, typed here
    LOSS_TYPES = ("softmax", "sigmoid", "focal")

    def __init__(
        self,
        samples_per_class: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        beta: float = 0.9999,
        loss_type: str = "softmax",
        gamma: float = 2.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if loss_type not in self.LOSS_TYPES:
            raise ClipAppError(f"loss_type must be one of {self.LOSS_TYPES}, got {loss_type!r}")
        self.loss_type, self.gamma, self.reduction = loss_type, gamma, reduction
        self.register_buffer("weights", class_balanced_weights(samples_per_class, beta))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = soft_targets(target, self.weights.numel()).to(logits.dtype)
        sample_weight = probs @ self.weights.to(logits.dtype)
        if self.loss_type == "softmax":
            per_sample = -(probs * F.log_softmax(logits, dim=-1)).sum(-1)
        elif self.loss_type == "sigmoid":
            per_sample = F.binary_cross_entropy_with_logits(logits, probs, reduction="none").sum(-1)
        else:
            per_sample = focal_loss(logits, probs, gamma=self.gamma, reduction="none")
        return _reduce(sample_weight * per_sample, self.reduction)
