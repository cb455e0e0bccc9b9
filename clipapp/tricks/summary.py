"""Parameter counts per module, with trainable and frozen split."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn

from clipapp.errors import ClipAppError


class SummaryRow(NamedTuple):
    name: str
    params: int
    trainable: int
    frozen: int


def parameter_summary(model: nn.Module, depth: int = 1) -> list[SummaryRow]:
    """Parameter counts grouped by module path truncated to `depth` levels, in registration order.

    Helps checking what a freezing / LoRA / linear-probe setup really trains before spending compute.
    A parameter owned directly by a shallower module is counted under that module, one owned by the root under
    its own name (e.g. `logit_scale`). Shared (tied) parameters are counted once, like `model.parameters()`.
    """
    if depth < 1:
        raise ClipAppError(f"depth must be >= 1, got {depth}")
    rows: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        module_path = name.split(".")[:-1]
        key = ".".join(module_path[:depth]) if module_path else name
        counts = rows.setdefault(key, [0, 0])
        counts[0 if param.requires_grad else 1] += param.numel()
    return [SummaryRow(key, t + f, t, f) for key, (t, f) in rows.items()]


def format_summary(rows: list[SummaryRow]) -> str:
    """A plain-text table of `parameter_summary` rows with a total line."""
    total = SummaryRow(
        "total", sum(r.params for r in rows), sum(r.trainable for r in rows), sum(r.frozen for r in rows)
    )
    header = ("module", "params", "trainable", "frozen")
    body = [(r.name, f"{r.params:,}", f"{r.trainable:,}", f"{r.frozen:,}") for r in [*rows, total]]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def fmt(line):
        return "  ".join(line[0].ljust(widths[0]) if i == 0 else line[i].rjust(widths[i]) for i in range(4)).rstrip()

    rule = "-" * (sum(widths) + 6)
    return "\n".join([fmt(header), rule, *map(fmt, body[:-1]), rule, fmt(body[-1])])
