"""Weights on disk: writing a state dict as safetensors (atomically), and the local weights file a spec names.

Reading goes through open_clip (`weights_only=True` for .pt/.bin, so a checkpoint cannot run code)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipapp.errors import ModelLoadError


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Save tensors as safetensors atomically (temp file, fsync, rename): a crash never leaves a torn file."""
    from safetensors.torch import save_file

    from clipapp.storage import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def local_weights(path: str | os.PathLike) -> str:
    """The weights file of a `NAME:/path` or demo spec, `~` expanded; an error naming it when it is not a file."""
    where = Path(path).expanduser()
    if not where.is_file():
        raise ModelLoadError(f"Weights file not found: {where}")
    return str(where)
