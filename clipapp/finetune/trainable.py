"""The models trained over image features: `TrainableHead`, a linear head that starts as the zero-shot classifier,
and `PartialTower`, the tuned top of a visual tower copy under that head (partial fine-tuning).

Not to be confused with the classifiers of `clipapp.classify` (label sets scored at inference) or an `Adapter`
(the saved result).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp._compat import forward_getattr
from clipapp.finetune.towers import visual_blocks, visual_kind, visual_prefix, visual_suffix, visual_top_names


class TrainableHead(nn.Module):
    """logits = logit_scale * normalize(features) @ weight.T + bias; at the start weight = the unit zero-shot
    embeddings and bias = 0, so an untrained head is exactly the zero-shot classifier."""

    def __init__(self, zero_shot_weights: np.ndarray | torch.Tensor, logit_scale: float):
        super().__init__()
        weights = torch.as_tensor(np.asarray(zero_shot_weights), dtype=torch.float32)
        self.weight = nn.Parameter(F.normalize(weights, dim=-1).clone())
        self.bias = nn.Parameter(torch.zeros(len(weights)))
        self.logit_scale = float(logit_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(features, dim=-1) @ self.weight.T + self.bias


class PartialTower(nn.Module):
    """The tuned top of a visual tower copy plus the head; input = activations entering the first tuned block.

    Only the tuned modules are registered, so `state_dict()` (used by EMA, early stopping and WiSE) is small; the
    frozen lower part is reached through `prefix()`. BatchNorm layers (ResNet towers) stay in eval mode: a few
    images per batch would only corrupt their running statistics.
    """

    _visual: nn.Module  # the whole tower copy, set in __init__ outside the Module registry

    def __init__(self, visual: nn.Module, first_tuned: int, head: TrainableHead, dtype: torch.dtype = torch.float32):
        super().__init__()
        # The tuned blocks compute in `dtype` under autocast (clipapp/model/device.py's training_dtype); the head
        # stays fp32: at CLIP's logit scale of 100, bf16's 8-bit mantissa would move a logit by up to ~0.4.
        self.compute_dtype = dtype
        self._conv = visual_kind(visual) == "resnet"
        self.blocks = nn.ModuleList([block for _, block in visual_blocks(visual)[first_tuned:]])
        for name in visual_top_names(visual):
            setattr(self, name, getattr(visual, name))  # the same module / Parameter objects as the copy's
        self.head = head
        self.first_tuned = first_tuned
        # Not a submodule: keeps the frozen part out of state_dict (deepcopy, as timm's EMA does, still copies it
        # consistently because the tuned blocks are the same objects inside it).
        object.__setattr__(self, "_visual", visual)

    def train(self, mode: bool = True) -> "PartialTower":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return visual_prefix(self._visual, pixels, self.first_tuned)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._conv:  # the tower copy is channels-last (towers.tuned_visual_copy); so must its input be
            tokens = tokens.contiguous(memory_format=torch.channels_last)
        with torch.autocast(tokens.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            return visual_suffix(self._visual, tokens, self.first_tuned).float()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))


def head_of(model: nn.Module) -> TrainableHead:
    """The linear head of a trainable model (its EMA copy included): the model itself in head mode."""
    head = model.head if isinstance(model, PartialTower) else model
    if not isinstance(head, TrainableHead):
        raise TypeError(f"{type(model).__name__} is not a TrainableHead or PartialTower.")
    return head


def model_inputs(model: nn.Module, x: torch.Tensor, pixel_space: bool) -> torch.Tensor:
    """What `model` is called on: `x` itself, or, for pixels, the frozen part of the tower run on them first
    (pixel space exists in partial mode only)."""
    if not pixel_space:
        return x
    if not isinstance(model, PartialTower):
        raise TypeError(f"Pixel inputs need a PartialTower, not {type(model).__name__}.")
    return model.prefix(x)


# names before 0.2 (HeadClassifier, PartialClassifier), kept for one release: _compat.MOVED_NAMES
__getattr__ = forward_getattr(__name__, ())
