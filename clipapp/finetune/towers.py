"""Tower surgery: an open_clip visual tower split at a block, for partial fine-tuning and for adapters that carry
tuned blocks.

Two open_clip towers can be split: the ViT (`visual.transformer.resblocks.{i}`, then ln_post and proj) and the
ModifiedResNet (bottlenecks `visual.layer{s}.{j}` in order, then attnpool; the demo model is one). Training
(`features`, `trainable`) runs the frozen prefix once and trains the suffix; an adapter (`adapter`) puts its tuned
weights into a copy of the resident tower. The resident model is never modified.
"""

from __future__ import annotations

import copy
from typing import Mapping, Optional, Protocol, runtime_checkable

import torch
import torch.nn as nn

from clipapp.errors import ClipAppError
from clipapp.tricks.freeze import freeze_by_pattern, unfreeze_by_pattern


def visual_kind(visual: nn.Module) -> str:
    """ "vit" or "resnet": which of the two splittable open_clip towers `visual` is; anything else is refused."""
    if hasattr(getattr(visual, "transformer", None), "resblocks") and hasattr(visual, "_embeds"):
        if getattr(visual, "attn_pool", None) is not None:
            raise ClipAppError(
                "Partial fine-tuning does not support ViT towers with attention pooling; use mode 'head' or 'cache'."
            )
        return "vit"
    if all(hasattr(visual, name) for name in ("stem", "layer1", "layer4", "attnpool")):
        return "resnet"
    raise ClipAppError(
        f"Partial fine-tuning needs an open_clip ViT or ModifiedResNet visual tower; this model has "
        f"{type(visual).__name__}. Use mode 'head' or 'cache'."
    )


@runtime_checkable
class _ViTMethods(Protocol):
    """The methods of open_clip's `VisionTransformer` used here (open_clip ships no type information). Methods
    only, and plain attributes: a runtime check finds them, while submodules live in the Module's own registry."""

    grid_size: tuple[int, int]  # patches per side

    def _embeds(self, x: torch.Tensor) -> torch.Tensor: ...

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class _ResNetMethods(Protocol):
    """The method of open_clip's `ModifiedResNet` used here: its stem (three convolutions and a pool)."""

    def stem(self, x: torch.Tensor) -> torch.Tensor: ...


def _resnet(visual: nn.Module) -> _ResNetMethods:
    if not isinstance(visual, _ResNetMethods):
        raise ClipAppError(f"{type(visual).__name__} is not an open_clip ModifiedResNet.")
    return visual


def _vit(visual: nn.Module) -> _ViTMethods:
    if not isinstance(visual, _ViTMethods):
        raise ClipAppError(f"{type(visual).__name__} is not an open_clip VisionTransformer.")
    return visual


def vit_grid_size(visual: nn.Module) -> tuple[int, int]:
    """(height, width) of a ViT tower's patch grid."""
    return _vit(visual).grid_size


def _vit_proj(visual: nn.Module) -> Optional[nn.Parameter]:
    """The ViT's output projection; open_clip sets `proj = None` when it has none."""
    return dict(visual.named_parameters(recurse=False)).get("proj")


def _block_list(visual: nn.Module, name: str) -> nn.ModuleList | nn.Sequential:
    blocks = visual.get_submodule(name)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        raise ClipAppError(f"{type(visual).__name__}.{name} is a {type(blocks).__name__}, not a list of blocks.")
    return blocks


def visual_blocks(visual: nn.Module) -> list[tuple[str, nn.Module]]:
    """The tower's blocks in forward order, with their parameter-name prefixes."""
    if visual_kind(visual) == "vit":
        return [(f"transformer.resblocks.{i}", b) for i, b in enumerate(_block_list(visual, "transformer.resblocks"))]
    return [(f"layer{s}.{j}", b) for s in range(1, 5) for j, b in enumerate(_block_list(visual, f"layer{s}"))]


def visual_top_names(visual: nn.Module) -> list[str]:
    """What sits above the blocks and is tuned with them: final norm and projection, or the attention pool."""
    if visual_kind(visual) == "vit":
        return ["ln_post"] + (["proj"] if _vit_proj(visual) is not None else [])
    return ["attnpool"]


def check_partial_visual(visual: nn.Module, blocks: int) -> int:
    """Index of the first tuned block when the last `blocks` blocks of the visual tower are tuned."""
    n = len(visual_blocks(visual))
    if not 1 <= blocks <= n:
        raise ClipAppError(f"Partial fine-tuning: --blocks must be between 1 and {n} for this model, got {blocks}.")
    return n - blocks


def _batch_first(visual: nn.Module) -> bool:
    return visual_kind(visual) != "vit" or getattr(visual.transformer, "batch_first", True)


def _run_blocks(visual: nn.Module, x: torch.Tensor, start: int, stop: Optional[int]) -> torch.Tensor:
    batch_first = _batch_first(visual)
    x = x if batch_first else x.transpose(0, 1)
    for _, block in visual_blocks(visual)[start:stop]:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


def visual_prefix(visual: nn.Module, pixels: torch.Tensor, first_tuned: int) -> torch.Tensor:
    """Activations entering block `first_tuned`: the frozen part of the tower (tokens N, L, D or maps N, C, H, W)."""
    x = _vit(visual)._embeds(pixels) if visual_kind(visual) == "vit" else _resnet(visual).stem(pixels)
    return _run_blocks(visual, x, 0, first_tuned)


def visual_suffix(visual: nn.Module, x: torch.Tensor, first_tuned: int) -> torch.Tensor:
    """Image embeddings (not normalised) from the activations entering block `first_tuned`: the tuned part.

    Mirrors open_clip's `VisionTransformer.forward` / `ModifiedResNet.forward`:
    `visual_suffix(v, visual_prefix(v, x, i), i) == v(x)`.
    """
    x = _run_blocks(visual, x, first_tuned, None)
    if visual_kind(visual) == "resnet":
        return visual.get_submodule("attnpool")(x)
    pooled, _ = _vit(visual)._pool(x)
    proj = _vit_proj(visual)
    if proj is not None:
        pooled = pooled @ proj
    return pooled


def tuned_visual_copy(model: nn.Module, blocks: int) -> tuple[nn.Module, int, list[str]]:
    """A float32 deep copy of `model.visual` with only its last `blocks` blocks and what sits above them trainable
    (channels-last where it is a conv tower).

    Returns (copy, index of the first tuned block, names of the trainable parameters). The resident model's own
    parameters are untouched: every tensor of the copy is new memory.
    """
    resident = model.get_submodule("visual")
    first = check_partial_visual(resident, blocks)
    visual = copy.deepcopy(resident).float().eval()
    if visual_kind(visual) == "resnet":  # oneDNN's convolutions: NCHW made a demo-model step 1.05-1.37x slower
        visual = visual.to(memory_format=torch.channels_last)
    freeze_by_pattern(visual, ["*"])
    patterns = [f"{prefix}.*" for prefix, _ in visual_blocks(visual)[first:]]
    patterns += [
        name if isinstance(getattr(visual, name), nn.Parameter) else f"{name}.*" for name in visual_top_names(visual)
    ]
    unfreeze_by_pattern(visual, patterns)
    names = [name for name, p in visual.named_parameters() if p.requires_grad]
    return visual, first, names


def tower_with_weights(visual: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A frozen float32 deep copy of `visual` with `weights` (parameter names under the tower) copied in."""
    tower = copy.deepcopy(visual).float().eval()
    params = dict(tower.named_parameters())
    for name, tensor in weights.items():
        target = params[name]
        target.data.copy_(tensor.to(target.device, dtype=target.dtype))
    tower.requires_grad_(False)
    return tower


def unfit_weights(visual: nn.Module, weights: Mapping[str, torch.Tensor]) -> list[str]:
    """The names in `weights` (parameter names under the tower) that `visual` lacks or holds in another shape."""
    params = dict(visual.named_parameters())
    return [
        name
        for name, tensor in weights.items()
        if name not in params or tuple(params[name].shape) != tuple(tensor.shape)
    ]
