"""Adapter assembly: the trained (and WiSE-blended) weights, or the cache, as an `Adapter` to save and classify with."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clipapp.finetune.adapter import Adapter
from clipapp.finetune.config import FinetuneConfig
from clipapp.finetune.features import TrainingSetup
from clipapp.finetune.model_choice import wise_blend
from clipapp.finetune.trainable import PartialTower, head_of


def trained_adapter(
    setup: TrainingSetup,
    final_state: dict[str, torch.Tensor],
    alpha: float,
    config: FinetuneConfig,
    **adapter_kwargs: Any,
) -> Adapter:
    """(1 - alpha) * start + alpha * `final_state` as an adapter: the head, plus the tuned visual parameters in
    partial mode. The tower copy is put back to its start afterwards."""
    model = setup.build_model()
    anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(wise_blend(anchor, final_state, alpha))
    head = head_of(model)
    visual_state = _tuned_visual_state(setup) if isinstance(model, PartialTower) else {}
    assert config.mode is not None and config.blocks is not None  # FinetuneConfig.__post_init__ fills them in
    return Adapter(
        head=head.weight.detach().cpu().numpy(),
        head_bias=head.bias.detach().cpu().numpy(),
        mode=config.mode,
        visual_state=visual_state,
        visual_blocks=config.blocks if visual_state else 0,
        **adapter_kwargs,
    )


def _tuned_visual_state(setup: TrainingSetup) -> dict[str, torch.Tensor]:
    visual, zero_visual = setup.visual, setup.zero_visual
    if visual is None or zero_visual is None:
        raise TypeError("A partial-mode TrainingSetup carries its tower copy and its start weights.")
    params = dict(visual.named_parameters())
    state = {f"visual.{n}": params[n].detach().cpu().clone() for n, p in params.items() if p.requires_grad}
    visual.load_state_dict(zero_visual, strict=False)
    return state


def cache_adapter(
    features: np.ndarray, targets: np.ndarray, zero_shot: np.ndarray, alpha: float, beta: float, **adapter_kwargs: Any
) -> Adapter:
    """The training-free cache adapter: keys = support features, values = one-hot labels, over the zero-shot head."""
    return Adapter(
        head=zero_shot,
        mode="cache",
        cache_keys=features,
        cache_values=np.eye(len(zero_shot), dtype=np.float32)[targets],
        cache_alpha=alpha,
        cache_beta=beta,
        **adapter_kwargs,
    )
