"""Competition training tricks as small, model-agnostic pieces.

Each module does one thing and knows nothing of CLIP: mixing (mixup / CutMix / Cutout), losses (label
smoothing, focal, class-balanced), SAM, weight EMA, early stopping, freezing, layer-wise lr decay, gradient
clipping, multi-resolution (FixRes) training, straight-through Gumbel-softmax, hyperparameter sweeps,
experiment logging and parameter summaries. Heavy dependencies (timm, pytorch_optimizer, optuna, tensorboard)
are imported only when the trick that needs them is used.
"""

from clipapp.model.device import select_device
from clipapp.tricks.early_stopping import EarlyStopping
from clipapp.tricks.ema import WeightEma
from clipapp.tricks.experiment_log import ExperimentLogger
from clipapp.tricks.freeze import freeze_by_pattern, set_requires_grad_by_pattern, unfreeze_by_pattern
from clipapp.tricks.grad_clip import clip_gradients
from clipapp.tricks.gumbel import gumbel_softmax_st
from clipapp.tricks.losses import (
    ClassBalancedLoss,
    FocalLoss,
    LabelSmoothingCrossEntropy,
    class_balanced_weights,
    focal_loss,
)
from clipapp.tricks.lr_groups import layerwise_lr_groups
from clipapp.tricks.mixing import MixedBatch, MixupCutmix, cutmix, cutout, mixup, rand_box
from clipapp.tricks.resolution import ResolutionSchedule, resize_batch
from clipapp.tricks.sam import make_sam, sam_step
from clipapp.tricks.summary import SummaryRow, format_summary, parameter_summary
from clipapp.tricks.sweep import SweepResult, SweepTrial, run_sweep
from clipapp.tricks.targets import soft_targets

__all__ = [
    "ClassBalancedLoss",
    "EarlyStopping",
    "ExperimentLogger",
    "FocalLoss",
    "LabelSmoothingCrossEntropy",
    "MixedBatch",
    "MixupCutmix",
    "ResolutionSchedule",
    "SummaryRow",
    "SweepResult",
    "SweepTrial",
    "WeightEma",
    "class_balanced_weights",
    "clip_gradients",
    "cutmix",
    "cutout",
    "focal_loss",
    "format_summary",
    "freeze_by_pattern",
    "gumbel_softmax_st",
    "layerwise_lr_groups",
    "make_sam",
    "mixup",
    "parameter_summary",
    "rand_box",
    "resize_batch",
    "run_sweep",
    "sam_step",
    "select_device",
    "set_requires_grad_by_pattern",
    "soft_targets",
    "unfreeze_by_pattern",
]
