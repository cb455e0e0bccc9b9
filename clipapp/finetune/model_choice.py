"""Model choice: held-out splits and k-fold plans, the monitored score, WiSE-FT blends, the choice of epoch and blend
across folds, the sign test that decides whether an adapter replaces zero-shot, and the cache adapter's blend.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from clipapp.errors import ClipAppError
from clipapp.finetune.config import CACHE_ALPHAS, CACHE_BETAS, FinetuneConfig
from clipapp.finetune.results import metrics_from_logits

if TYPE_CHECKING:
    from clipapp.finetune.loop import Run


def stratified_split(
    targets: Sequence[int] | np.ndarray, *, val_per_class: int = 0, val_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), each class in both parts: every class needs at least 2 images.

    A class with n images holds out `val_per_class` of them, or round(n * val_fraction); always 1 to n - 1.
    """
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ClipAppError(f"Class {int(label)} has {len(members)} image(s); a held-out split needs at least 2.")
        n_val = val_per_class if val_per_class > 0 else int(round(len(members) * val_fraction))
        n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def stratified_folds(targets: Sequence[int] | np.ndarray, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """`k` disjoint held-out index sets covering every sample. Classes are dealt round-robin, one after another,
    from a random starting fold: per class the folds differ by at most one image, and overall by at most one too
    (so with one image per class no fold is left empty)."""
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    position = int(rng.integers(k))
    for label in np.unique(labels):
        for index in rng.permutation(np.flatnonzero(labels == label)):
            folds[position % k].append(int(index))
            position += 1
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


@dataclass
class ValidationPlan:
    kind: str  # holdout | kfold | none
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train, held-out) index pairs


def plan_validation(targets: np.ndarray, config: FinetuneConfig) -> ValidationPlan:
    """Held-out split when every class has `kfold_below` images or more, k-fold below that, none with 1 image."""
    counts = np.bincount(targets)
    counts = counts[counts > 0]
    all_indices = np.arange(len(targets))
    if len(targets) < 2:
        return ValidationPlan("none", [(all_indices, all_indices[:0])])
    smallest = int(counts.min())
    if smallest >= config.kfold_below or (config.val_per_class and smallest > config.val_per_class):
        train, val = stratified_split(
            targets, val_per_class=config.val_per_class, val_fraction=config.val_fraction, seed=config.seed
        )
        return ValidationPlan("holdout", [(train, val)])
    assert config.max_folds is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    k = int(min(config.max_folds, max(2, smallest), len(targets)))
    folds = stratified_folds(targets, k, seed=config.seed)
    return ValidationPlan("kfold", [(np.setdiff1d(all_indices, fold), fold) for fold in folds if len(fold)])


def score(monitor: str, loss: float, acc: float) -> float:
    """What model selection minimises. Accuracy on a few held-out images ties often: the loss breaks the ties."""
    return loss if monitor == "val_loss" else -acc + 1e-3 * min(loss, 100.0)


@contextmanager
def wise_applied(model: nn.Module, anchor: dict[str, torch.Tensor], alpha: float) -> Iterator[nn.Module]:
    """(1 - alpha) * anchor + alpha * current weights in `model` for the block, then the current ones back exactly.

    In place with foreach ops on the state tensors: load_state_dict's per-tensor Python made these blends a tenth of
    a partial fine-tune's time (cProfile, digits 16 shots)."""
    if alpha >= 1.0:
        yield model
        return
    names = [k for k, v in model.state_dict().items() if v.is_floating_point() and k in anchor]
    state = model.state_dict()
    current = [state[k] for k in names]  # share storage with the parameters and buffers
    backup = [t.clone() for t in current]
    with torch.no_grad():
        torch._foreach_lerp_(current, [anchor[k].to(t) for k, t in zip(names, current, strict=True)], 1.0 - alpha)
    try:
        yield model
    finally:
        with torch.no_grad():
            torch._foreach_copy_(current, backup)


def wise_blend(
    anchor: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT weight-space ensemble: (1 - alpha) * anchor + alpha * tuned for every floating-point tensor."""
    out = {}
    for key, value in tuned.items():
        if key in anchor and value.is_floating_point():
            out[key] = (1.0 - alpha) * anchor[key].to(value) + alpha * value
        else:
            out[key] = value
    return out


@dataclass
class Selection:
    """The choice made on held-out data: epoch count, WiSE blend, and each held-out image's logits at that choice."""

    best_epoch: int
    best_alpha: float
    after_logits: np.ndarray  # (n images, classes), rows outside the held-out set are zeros (all: none held out)
    history: dict[str, list]
    held_out: np.ndarray  # the images the choice was made on (and the before/after numbers are from)


def choose_across_folds(runs: Sequence["Run"], plan: ValidationPlan, n_images: int, n_classes: int) -> Selection:
    """The epoch count and blend whose mean held-out score over the folds is best; predictions out of fold."""
    length = min(len(r.val_logits) for r in runs)
    mean = np.mean([r.val_scores[:length] for r in runs], axis=0)  # (epochs, alphas), minimised
    best_epoch, best_alpha_index = (int(i) for i in np.unravel_index(np.argmin(mean), mean.shape))
    after_logits = np.zeros((n_images, n_classes), dtype=np.float32)
    for (_, val_idx), run in zip(plan.splits, runs, strict=True):
        after_logits[val_idx] = run.val_logits[best_epoch][best_alpha_index]
    history = {
        k: np.array([[math.nan if v is None else v for v in r.history[k][:length]] for r in runs], dtype=np.float64)
        .mean(0)
        .tolist()
        for k in runs[0].history
    }
    held_out = np.concatenate([val_idx for _, val_idx in plan.splits[: len(runs)]])
    return Selection(best_epoch, runs[0].alphas[best_alpha_index], after_logits, history, held_out)


def choose_in_run(run: "Run", val_idx: np.ndarray | None, n_images: int, n_classes: int) -> Selection:
    """A held-out split (or no validation): the run's own best epoch and blend."""
    after_logits = np.zeros((n_images, n_classes), dtype=np.float32)
    if val_idx is not None:
        after_logits[val_idx] = run.val_logits[run.best_epoch][run.alphas.index(run.best_alpha)]
    held_out = np.zeros(0, dtype=np.int64) if val_idx is None else np.asarray(val_idx)
    return Selection(run.best_epoch, run.best_alpha, after_logits, run.history, held_out)


def beats_zero_shot(
    logits: np.ndarray, zero_logits: np.ndarray, targets: np.ndarray, held_out: np.ndarray, p_value: float = 0.05
) -> bool:
    """Is the adapted classifier better than zero-shot on the held-out images, beyond chance?

    A one-sided sign test (exact binomial, McNemar's exact test) on the discordant images: `wins` that only the
    adapted one gets right, `losses` that only zero-shot gets right. Under "no better" each is a fair coin.
    """
    from scipy.stats import binomtest

    y = targets[held_out]
    adapted_right = logits[held_out].argmax(1) == y
    zero_right = zero_logits[held_out].argmax(1) == y
    wins, losses = int((adapted_right & ~zero_right).sum()), int((zero_right & ~adapted_right).sum())
    if wins <= losses:
        return False
    return binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue <= p_value


def fit_cache(
    features: np.ndarray,
    targets: np.ndarray,
    zero_logits: np.ndarray,
    plan: ValidationPlan,
    config: FinetuneConfig,
    n_classes: int,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Pick the cache blend (alpha, beta) on held-out data; returns (held-out logits at the best blend, best)."""
    values = np.eye(n_classes, dtype=np.float32)[targets]
    alphas = [config.cache_alpha] if config.cache_alpha is not None else list(CACHE_ALPHAS)
    betas = [config.cache_beta] if config.cache_beta is not None else list(CACHE_BETAS)
    if plan.kind == "none":  # nothing to choose on: Tip-Adapter's defaults unless set
        alphas = [1.0 if config.cache_alpha is None else config.cache_alpha]
        betas = [5.5 if config.cache_beta is None else config.cache_beta]
    affinities = []
    for train_idx, val_idx in plan.splits:
        if len(val_idx):
            affinities.append((val_idx, 1.0 - features[val_idx] @ features[train_idx].T, values[train_idx]))

    def logits_for(alpha: float, beta: float) -> np.ndarray:
        out = np.zeros_like(zero_logits)
        for val_idx, distance, support in affinities:
            out[val_idx] = zero_logits[val_idx] + alpha * np.exp(-beta * distance) @ support
        return out

    if not affinities or (len(alphas) == 1 and len(betas) == 1):
        best = (alphas[0], betas[0])
        return logits_for(*best), best
    from clipapp.tricks import run_sweep

    held_out = np.concatenate([v for v, _, _ in affinities])

    def objective(params: dict) -> float:
        m = metrics_from_logits(logits_for(params["alpha"], params["beta"])[held_out], targets[held_out])
        return m["top1"] - 1e-3 * m["loss"]  # accuracy first, the loss breaks ties on small held-out sets

    result = run_sweep(objective, {"alpha": alphas, "beta": betas}, method="grid", seed=config.seed)
    best = (float(result.best.params["alpha"]), float(result.best.params["beta"]))
    return logits_for(*best), best
