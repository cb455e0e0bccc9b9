"""Competition training tricks as small, model-agnostic pieces.

Each module does one thing and knows nothing of CLIP: mixing (mixup / CutMix), soft targets (label smoothing),
losses (focal, class-balanced), SAM, weight EMA, early stopping, freezing, layer-wise lr decay, gradient clipping
and hyperparameter sweeps; each is used by `clipapp.finetune`. Heavy dependencies (timm, pytorch_optimizer,
optuna) are imported only when the trick that needs them is used.
"""

from clipapp.model.device import select_device
from clipapp.tricks.early_stopping import EarlyStopping
from clipapp.tricks.ema import WeightEma
from clipapp.tricks.freeze import freeze_by_pattern, set_requires_grad_by_pattern, unfreeze_by_pattern
from clipapp.tricks.grad_clip import clip_gradients
from clipapp.tricks.losses import (
    ClassBalancedLoss,
    FocalLoss,
    class_balanced_weights,
    focal_loss,
)
from clipapp.tricks.lr_groups import layerwise_lr_groups
from clipapp.tricks.mixing import MixedBatch, MixupCutmix, cutmix, mixup, rand_box
from clipapp.tricks.sam import make_sam, sam_step
from clipapp.tricks.sweep import SweepResult, SweepTrial, run_sweep
from clipapp.tricks.targets import soft_targets

__all__ = [
    "ClassBalancedLoss",
    "EarlyStopping",
    "FocalLoss",
    "MixedBatch",
    "MixupCutmix",
    "SweepResult",
    "SweepTrial",
    "WeightEma",
    "class_balanced_weights",
    "clip_gradients",
    "cutmix",
    "focal_loss",
    "freeze_by_pattern",
    "layerwise_lr_groups",
    "make_sam",
    "mixup",
    "rand_box",
    "run_sweep",
    "sam_step",
    "select_device",
    "set_requires_grad_by_pattern",
    "soft_targets",
    "unfreeze_by_pattern",
]
