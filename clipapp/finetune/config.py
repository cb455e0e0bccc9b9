"""Every setting of a fine-tune, in one place: `FinetuneConfig`, the modes and the fixed grids selection tries.

The defaults are chosen from measurements on bench/bench_fewshot.py (README, "Few-shot fine-tuning").
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from clipapp.errors import ClipAppError
from clipapp.prompts import DEFAULT_TEMPLATES, resolve_templates

MODES = ("head", "cache", "partial")  # also the modes an adapter file may name (clipapp.adapter)
MONITORS = ("val_loss", "val_acc")
HEAD_INITS = ("zero-shot", "random")
# where partial fine-tuning mixes: on the activations cached at the block boundary (manifold mixup; CutMix on the
# spatial maps or the ViT token grid), or on the pixels (the frozen lower blocks then run again at every step)
MIX_SPACES = ("activations", "pixels")
ProgressFn = Callable[[float, str], None]
StopFlag = Optional[threading.Event | Callable[[], bool]]

WISE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the blends tried when wise_alpha is None (0 = keep zero-shot)
WISE_ALPHA_UNVALIDATED = 0.5  # nothing held out to choose on: the middle, robust in the WiSE-FT paper
CACHE_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)
CACHE_BETAS = (1.0, 3.0, 5.5, 8.0, 12.0)
# The schedule a mode gets when `epochs`, `max_folds` or `views` is left at None, measured on bench_fewshot
# (digits, seed 0): the head needs its 80 epochs (4 shots: 57.8% at 80 epochs x 5 folds, 50.0% at 20 x 3), while
# partial fine-tuning, each step running two tower blocks, gets 30 epochs x 3 folds at a higher visual lr. Digits,
# 3 seeds, 20 epochs: 66.0 / 84.4 (4 / 16 shots) with 4 augmented views, 69.6 / 84.7 with 1, so views stay off;
# at 20 epochs the chosen epoch was the last one (seed 0, 16 shots: 87.6% at 20 epochs, 88.4% at 30).
MODE_DEFAULTS: dict[str, dict[str, int]] = {
    "head": {"epochs": 80, "max_folds": 5, "views": 1},
    "cache": {"epochs": 80, "max_folds": 5, "views": 1},
    "partial": {"epochs": 30, "max_folds": 3, "views": 1},
}


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tune, as plain data (`to_dict` / `from_dict` round-trip through JSON).

    A trick is off at 0 (mixup, cutmix, label_smoothing, ema, sam, focal, class_balanced, clip_grad).
    """

    mode: str = "partial"  # head | cache | partial
    head_init: str = "zero-shot"  # zero-shot | random (a plain linear probe, for comparison only)
    templates: str | list[str] = DEFAULT_TEMPLATES
    epochs: Optional[int] = None  # None: the mode's default (MODE_DEFAULTS)
    # head learning rate (AdamW, cosine schedule over `epochs`) in logit units: the weights move by lr / logit_scale,
    # so a model with a sharp temperature (CLIP's 100) and one with a soft one (the demo model's 12) see the same
    # change in logits per step. EMA, WiSE, early stopping and the sign test keep it in check
    lr: float = 0.6
    batch_size: int = 16
    # an epoch is a pass over the training images, but at least this many steps: with 4 images per class a pass is
    # 2 steps, too few updates over `epochs` (digits, 4 shots, 6 seeds: 48.7% -> 51.7% top-1 in bench_fewshot)
    min_epoch_steps: int = 5
    # L2 pull of the head towards its start, the zero-shot weights (L2-SP). Off by default: with the held-out choice
    # of the WiSE blend and the zero-shot fallback it measured no better (bench_fewshot), and it hurts where the
    # zero-shot prior is wrong (classes the model has never seen)
    anchor_weight: float = 0.0
    # WiSE-FT blend: 0 = zero-shot weights, 1 = the fine-tuned ones; None = the best of WISE_ALPHAS on held-out data
    wise_alpha: Optional[float] = None
    # partial fine-tuning of the visual tower
    blocks: int = 2
    visual_lr: float = 5e-4  # the top tuned block; lower ones decay by layer_decay per block
    layer_decay: float = 0.75
    weight_decay: float = 0.05  # AdamW decay of the tuned visual matrices (never of the head)
    mix_space: str = "activations"  # partial mode: activations (the frozen part runs once per view) | pixels
    # augmented views per image whose frozen-part outputs are cached (view 0 is the image itself); training draws
    # one view per image and step. 1 = no augmentation; None: the mode's default (MODE_DEFAULTS)
    views: Optional[int] = None
    # tricks (the first three are on by default: measured better than without in bench/bench_fewshot.py)
    mixup: float = 0.2  # Beta(alpha, alpha); on features in head mode, on cached activations (or pixels) in partial
    cutmix: float = 0.0  # partial mode only: boxes of the cached spatial maps / token grid (or of the pixels)
    label_smoothing: float = 0.1
    ema: float = 0.99  # decay
    sam: float = 0.0  # rho, e.g. 0.05
    focal: float = 0.0  # gamma, e.g. 2
    class_balanced: float = 0.0  # beta, e.g. 0.999: weights classes by their effective number of images
    clip_grad: float = 0.0  # max gradient norm
    # validation and early stopping
    patience: int = 8
    monitor: str = "val_loss"
    val_per_class: int = 0  # held-out images per class; 0 = val_fraction of each class (at least 1)
    val_fraction: float = 0.25
    # k-fold while a class has fewer images than this: every image is held out once, so the epoch count and the WiSE
    # blend are chosen on all of them instead of on a noisy handful (cheap for the head; each fold is a run)
    kfold_below: int = 20
    max_folds: Optional[int] = None  # None: the mode's default (MODE_DEFAULTS)
    refit: bool = True  # after a held-out split, train again on every image for the chosen epoch count
    # keep the zero-shot classifier unless the adapted one is better on the held-out images by a one-sided sign test
    # at `gain_p_value` (over the images exactly one of the two gets right). The same images chose the epoch and the
    # WiSE blend, so one or two more right is noise; a model that has learnt something wins by a clear margin
    require_gain: bool = True
    gain_p_value: float = 0.05
    # cache adapter; None = picked on the held-out data
    cache_alpha: Optional[float] = None
    cache_beta: Optional[float] = None
    seed: int = 0
    max_images: int = 5000

    def __post_init__(self) -> None:
        for name, value in MODE_DEFAULTS.get(self.mode, MODE_DEFAULTS["head"]).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> "FinetuneConfig":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ClipAppError(f"Fine-tune setting: {message}")

        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        need(self.head_init in HEAD_INITS, f"head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}.")
        need(self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}.")
        need(self.mix_space in MIX_SPACES, f"mix_space must be one of {', '.join(MIX_SPACES)}, got {self.mix_space!r}.")
        need(1 <= int(self.views) <= 32, f"views must be between 1 and 32, got {self.views}.")
        need(0 <= int(self.epochs) <= 1000, f"epochs must be between 0 and 1000, got {self.epochs}.")
        need(self.lr > 0 and self.visual_lr > 0, "learning rates must be positive.")
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}.")
        need(self.min_epoch_steps >= 1, f"min_epoch_steps must be at least 1, got {self.min_epoch_steps}.")
        need(
            self.wise_alpha is None or 0.0 <= self.wise_alpha <= 1.0,
            f"WiSE alpha must be between 0 and 1 (or None: chosen on held-out data), got {self.wise_alpha}.",
        )
        need(self.blocks >= 1, f"blocks must be at least 1, got {self.blocks}.")
        need(0.0 < self.layer_decay <= 1.0, f"layer decay must be in (0, 1], got {self.layer_decay}.")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0.")
        need(0.0 <= self.label_smoothing < 1.0, f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        need(0.0 <= self.ema < 1.0, f"EMA decay must be in [0, 1), e.g. 0.99; got {self.ema}.")
        need(self.sam >= 0 and self.focal >= 0 and self.clip_grad >= 0, "sam, focal and clip_grad must be >= 0.")
        need(
            0.0 <= self.class_balanced < 1.0,
            f"class-balanced beta must be in [0, 1), e.g. 0.999; got {self.class_balanced}.",
        )
        need(self.anchor_weight >= 0 and self.weight_decay >= 0, "anchor_weight and weight_decay must be >= 0.")
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}.")
        need(self.val_per_class >= 0, f"val_per_class must be >= 0, got {self.val_per_class}.")
        need(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        need(self.kfold_below >= 2 and self.max_folds >= 2, "kfold_below and max_folds must be at least 2.")
        need(self.max_images >= 2, "max_images must be at least 2.")
        need(0.0 < self.gain_p_value <= 1.0, f"gain_p_value must be in (0, 1], got {self.gain_p_value}.")
        resolve_templates(self.templates)  # raises on a template without {}
        return self

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not isinstance(data["templates"], str):
            data["templates"] = list(data["templates"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClipAppError(
                f"Unknown fine-tune setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})."
            )
        return cls(**data).validate()


def stopped(stop: StopFlag) -> bool:
    """Has the caller asked to stop (an Event that is set, or a callable that returns True)?"""
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())
