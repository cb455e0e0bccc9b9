"""Straight-through Gumbel-softmax, on `torch.nn.functional.gumbel_softmax`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gumbel_softmax_st(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Sample a one-hot vector from `softmax(logits)` in the forward pass, with soft gradients backwards.

    Use it when a network must make a discrete choice (pick a prompt, a token, a branch, a codebook entry)
    and still be trained by backprop: the forward value is exactly one-hot (argmax of `logits + Gumbel noise`,
    so choices follow the softmax distribution), the backward pass uses the gradient of the relaxed
    `softmax((logits + g) / tau)`. Lower `tau` -> less biased but noisier gradients; anneal it from ~1 to ~0.1.
    """
    return F.gumbel_softmax(logits, tau=tau, hard=True, dim=dim)
