"""Mixup and CutMix on batches.

Hand-written rather than timm's `Mixup`: timm mixes in place with the batch flipped (so it needs an even batch),
does not hand back the lambda it used, and cannot mix (N, D) feature batches through its CutMix path. These
functions pair each sample with a random permutation (any batch size), leave the input untouched and return a
`MixedBatch` with the lambda really applied, the partner index and the pasted box.

Randomness comes from `rng` (a `numpy.random.Generator` or a seed); `None` uses numpy's global RNG, as timm does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipapp.errors import ClipAppError
from clipapp.tricks.targets import soft_targets

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open


@dataclass(frozen=True)
class MixedBatch:
    """A mixed batch: `targets` = `lam * soft(y) + (1 - lam) * soft(y[index])`, rows summing to 1."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lam: float
    index: torch.Tensor
    box: Box | None = None


def _rng(rng: np.random.Generator | int | None) -> Any:  # a Generator, or the np.random module itself
    if rng is None:
        return np.random  # the module-level RNG, seeded by np.random.seed
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _randint(rng, high: int) -> int:
    return int(rng.integers(high) if isinstance(rng, np.random.Generator) else rng.randint(high))


def _permutation(rng, n: int, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(rng.permutation(n), dtype=torch.long, device=device)


def _mixed_targets(target, index, lam, num_classes, smoothing) -> torch.Tensor:
    probs = soft_targets(target, num_classes, smoothing=smoothing)
    return lam * probs + (1.0 - lam) * probs[index]


def _check_float(x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"mixing needs a floating point batch, got {x.dtype}; convert images to float first")


def mixup(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int,
    alpha: float = 0.2,
    smoothing: float = 0.0,
    lam: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> MixedBatch:
    """Mixup (Zhang et al. 2018): convex blend of each sample with a random partner, lambda ~ Beta(alpha, alpha).

    Works on any batch shape (N, ...): images (N, C, H, W) or cached features (N, D). Helps when the training set
    is small or the labels are noisy: it regularises towards linear behaviour between samples and calibrates the
    confidences. Small alpha (0.1-0.4) for few-shot / linear heads, ~1.0 for long from-scratch runs.
    Pass `lam` to fix the mixing weight instead of sampling it.
    """
    _check_float(x)
    gen = _rng(rng)
    if lam is None:
        lam = float(gen.beta(alpha, alpha)) if alpha > 0 else 1.0
    index = _permutation(gen, x.shape[0], x.device)
    mixed = lam * x + (1.0 - lam) * x[index]
    return MixedBatch(mixed, _mixed_targets(target, index, lam, num_classes, smoothing), lam, index)


def rand_box(height: int, width: int, lam: float, rng: np.random.Generator | int | None = None) -> Box:
    """A box covering about `1 - lam` of the image, centred uniformly and clipped at the borders (CutMix)."""
    rng = _rng(rng)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = _randint(rng, height), _randint(rng, width)
    y0, y1 = np.clip([cy - cut_h // 2, cy + (cut_h + 1) // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + (cut_w + 1) // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


def cutmix(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int,
    alpha: float = 1.0,
    smoothing: float = 0.0,
    lam: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> MixedBatch:
    """CutMix (Yun et al. 2019): paste a box from a partner image; the label weight is the area kept.

    Needs spatial inputs (..., H, W). Helps image classifiers trained end-to-end (better localisation and
    robustness than mixup); it does nothing sensible for feature vectors, use `mixup` there.
    The box is clipped at the image border, so the returned `lam` is recomputed from the area really pasted:
    `lam = 1 - box_area / (H * W)`.
    """
    _check_float(x)
    if x.ndim < 3:
        raise ClipAppError(f"cutmix needs image batches (N, C, H, W); got shape {tuple(x.shape)}. Use mixup.")
    gen = _rng(rng)
    if lam is None:
        lam = float(gen.beta(alpha, alpha)) if alpha > 0 else 1.0
    index = _permutation(gen, x.shape[0], x.device)
    height, width = x.shape[-2:]
    y0, y1, x0, x1 = rand_box(height, width, lam, gen)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[index][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)  # the clipped box decides the real proportion
    return MixedBatch(mixed, _mixed_targets(target, index, lam, num_classes, smoothing), lam, index, (y0, y1, x0, x1))


class MixupCutmix:
    """Per-batch choice between mixup and CutMix, timm-style, for any batch size.

    With probability `prob` a batch is mixed; then CutMix is used with probability `switch_prob` when both are
    enabled (alpha > 0). Feature batches (N, D) always get mixup. An unmixed batch comes back with `lam = 1`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        smoothing: float = 0.0,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ClipAppError("enable mixup_alpha or cutmix_alpha (> 0)")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.smoothing = prob, switch_prob, smoothing
        self.rng = _rng(rng)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> MixedBatch:
        kw = dict(num_classes=self.num_classes, smoothing=self.smoothing, rng=self.rng)
        if self.rng.random() >= self.prob:
            index = torch.arange(x.shape[0], device=x.device)
            return MixedBatch(x, soft_targets(target, self.num_classes, smoothing=self.smoothing), 1.0, index)
        can_cut = x.ndim >= 3 and self.cutmix_alpha > 0
        use_cutmix = can_cut and (self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
        if use_cutmix:
            return cutmix(x, target, alpha=self.cutmix_alpha, **kw)
        return mixup(x, target, alpha=self.mixup_alpha if self.mixup_alpha > 0 else self.cutmix_alpha, **kw)
