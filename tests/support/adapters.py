"""Adapters made in memory for classification tests: a head with random class weights, and a partial-mode adapter
whose tuned visual state differs from the resident tower (so its features are its own)."""

from __future__ import annotations

import numpy as np

from clipapp.finetune.adapter import Adapter
from tests.support.fashion import LABELS


def random_head(service, *, seed: int, bias: bool = False) -> Adapter:
    """A head-mode adapter over the first four labels with random class weights (and a random bias)."""
    rng = np.random.default_rng(seed)
    return Adapter(
        name="h",
        class_names=LABELS[:4],
        spec=service.spec,
        logit_scale=service.logit_scale,
        head=rng.normal(size=(4, service.embed_dim)).astype(np.float32),
        head_bias=rng.normal(size=4).astype(np.float32) if bias else None,
    )


def tuned_partial(service, head: Adapter) -> Adapter:
    """A partial-mode adapter with `head`'s weights and the tower's final LayerNorm shifted by 0.1."""
    parameters = dict(service.model.visual.named_parameters())
    name = next(n for n in parameters if "ln_post" in n)
    return Adapter(
        name="p",
        class_names=LABELS[:4],
        spec=service.spec,
        logit_scale=1.0,
        head=head.head,
        mode="partial",
        visual_blocks=1,
        visual_state={f"visual.{name}": parameters[name] + 0.1},
    )
