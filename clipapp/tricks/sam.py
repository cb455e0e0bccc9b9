"""Sharpness-Aware Minimization (Foret et al. 2021) through `pytorch_optimizer.SAM`.

SAM looks for flat minima: it takes the gradient at the worst nearby point `w + rho * g / |g|` and applies it
at `w`. Helps generalisation when fine-tuning on little data, at the price of two forward/backward passes per
step. Pattern::

    optimizer = make_sam(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    for x, y in loader:
        def closure():
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss
        loss = sam_step(optimizer, closure, model=model)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from pytorch_optimizer import SAM


@runtime_checkable
class SamOptimizer(Protocol):
    """What `sam_step` calls: `pytorch_optimizer.SAM`'s two-step interface."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def first_step(self, zero_grad: bool = False) -> None: ...
    def second_step(self, zero_grad: bool = False) -> None: ...


def make_sam(
    params,
    base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
    *,
    rho: float = 0.05,
    adaptive: bool = False,
    **base_kwargs,
) -> SAM:
    """`pytorch_optimizer.SAM` around `base_optimizer(**base_kwargs)`; `adaptive=True` is ASAM (scale-invariant)."""
    from pytorch_optimizer import SAM  # imported here: the package takes a while to import

    return SAM(params, base_optimizer, rho=rho, adaptive=adaptive, **base_kwargs)


def sam_step(
    optimizer: SamOptimizer,
    closure: Callable[[], torch.Tensor],
    *,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """One SAM update; returns the loss at the unperturbed weights (the one to log).

    `closure` must run the forward pass, call `backward()` and return the loss; it is called twice, at `w` and
    at the perturbed weights. Gradients are zeroed here. Pass `model` to freeze BatchNorm running statistics
    during the second pass, so they are not updated twice from the same batch.
    """
    from pytorch_optimizer import disable_running_stats, enable_running_stats

    optimizer.zero_grad()
    loss = closure()
    optimizer.first_step(zero_grad=True)  # w -> w + e(w)
    if model is not None:
        disable_running_stats(model)
    try:
        closure()  # gradient at the perturbed point
    finally:
        if model is not None:
            enable_running_stats(model)
    optimizer.second_step(zero_grad=True)  # back to w, then the base optimizer steps with that gradient
    return loss.detach()
