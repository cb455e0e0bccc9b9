"""Layer-wise learning-rate decay (LLRD) parameter groups.

Hand-written: timm's `param_groups_layer_decay` needs the model to define `group_matcher()` (open_clip towers
do not) and emits `lr_scale` that only timm's schedulers apply. These groups carry a plain `lr` (so any torch
optimizer and scheduler works) plus `lr_scale` (so timm's schedulers work too).
"""

from __future__ import annotations

import re

import torch.nn as nn

from clipapp.errors import ClipAppError

# Non-block parameters that sit below the first block: stems, patch/token/position embeddings, pre-norms
# (open_clip and timm names). Everything else outside the blocks counts as head: final norms, projections,
# classifier, logit_scale.
EMBED_REGEX = (
    r"(^|\.)(conv1|stem|patch_embed|class_embedding|cls_token|positional_embedding|pos_embed"
    r"|token_embedding|ln_pre|norm_pre)(\.|$)"
)


def layerwise_lr_groups(
    model: nn.Module,
    base_lr: float,
    decay: float = 0.75,
    *,
    block_regex: str = r"\.resblocks\.(\d+)\.",
    embed_regex: str = EMBED_REGEX,
    weight_decay: float = 0.0,
    no_weight_decay_1d: bool = True,
) -> list[dict]:
    """Optimizer parameter groups with `lr = base_lr * decay ** depth`, depth counted from the top.

    Helps fine-tuning pretrained transformers (CLIP, ViT, BERT): lower layers hold generic features and should
    move less than the top ones. Decay 0.65-0.85 is usual.
    - Block `i` of a stack of `L` (index from `block_regex` group 1) has depth `L - i`; each stack (e.g. the
      visual and text towers) is counted separately, so the top block of each gets `base_lr * decay`.
    - Parameters outside blocks: those matching `embed_regex` get depth `max L + 1` (the lowest lr), all others
      (heads, final norms, projections) depth 0 (`base_lr`).
    - Only trainable parameters are included, each exactly once. Biases, norm gains and other tensors with
      fewer than 2 dims get no weight decay when `no_weight_decay_1d`.
    Each group also has `lr_scale`, `depth` and `param_names`. Use: `torch.optim.AdamW(groups)`.
    """
    if not 0.0 < decay <= 1.0:
        raise ClipAppError(f"decay must be in (0, 1], got {decay}")
    block_re, embed_re = re.compile(block_regex), re.compile(embed_regex)

    def block_of(name: str) -> tuple[str, int] | None:
        match = block_re.search("." + name)  # leading dot so a top-level `resblocks.0.` matches too
        return (name[: max(match.start() - 1, 0)], int(match.group(1))) if match else None

    named = list(model.named_parameters())
    # stack depths come from all parameters, frozen ones included, so freezing does not shift the lrs
    num_blocks: dict[str, int] = {}
    for name, _ in named:
        found = block_of(name)
        if found:
            num_blocks[found[0]] = max(num_blocks.get(found[0], 0), found[1] + 1)
    embed_depth = max(num_blocks.values(), default=0) + 1

    groups: dict[tuple[int, float], dict] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        found = block_of(name)
        if found:
            depth = num_blocks[found[0]] - found[1]
        elif embed_re.search(name):
            depth = embed_depth
        else:
            depth = 0
        wd = 0.0 if (no_weight_decay_1d and param.ndim < 2) else weight_decay
        group = groups.setdefault(
            (depth, wd),
            {
                "params": [],
                "param_names": [],
                "lr": base_lr * decay**depth,
                "lr_scale": decay**depth,
                "weight_decay": wd,
                "depth": depth,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    # lowest lr first, the order timm and BEiT use
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1]))]
