"""The one place that decides which torch device and precision to use."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "fp16", "amp", "bf16", "int8")


def select_device(name: str = "auto") -> torch.device:
    """`auto` -> first CUDA device if present, else CPU; otherwise `cpu`, `cuda` or `cuda:N`, validated."""
    from clipapp.errors import ClipAppError

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ClipAppError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ClipAppError(f"Device {name!r} asked for, but no CUDA GPU is available here.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ClipAppError(f"Device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist.")
    elif device.type != "cpu":
        raise ClipAppError(f"Unsupported device {name!r}: use auto, cpu, cuda or cuda:N.")
    return device


def cluster_precision(precision: str) -> str:
    """The precision every Ray actor runs at: `auto` would let each node pick its own (amp on a GPU node, fp32 on a
    CPU one), and one run would then mix embeddings of two precisions; so `auto` means fp32 there."""
    return "fp32" if (precision or "auto").lower() == "auto" else precision


def select_precision(precision: str, device: torch.device) -> str:
    """`auto` -> amp on a GPU (fp32 weights, fp16 autocast, as open_clip's own zero-shot evaluation runs), fp32 on a
    CPU (exact: int8 is only ever an explicit choice). fp16 casts the weights themselves (half the memory)."""
    from clipapp.errors import ClipAppError

    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ClipAppError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "amp" if device.type == "cuda" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ClipAppError("int8 (dynamic quantization) runs on the CPU only; use fp16 on a GPU.")
    if precision in ("fp16", "amp") and device.type == "cpu":
        raise ClipAppError(f"{precision} is only supported on a GPU; use fp32 (or bf16) on the CPU.")
    return precision
