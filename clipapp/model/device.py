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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (oneDNN's bf16 kernels; without them bf16 is emulated and no faster than fp32)."""
    if device.type == "cuda":  # Ampere and later; torch would count an older GPU's emulation as support
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def training_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The dtype the tuned visual blocks compute in during partial fine-tuning (under autocast; the weights, the
    optimiser and the head stay fp32). `auto` -> bf16 where `device` has it natively (a ViT-B-32 step of one tuned
    block on this project's 2-core AVX512-BF16 CPU: 217 -> 135 ms; bench/bench_partial_step.py), else fp32."""
    from clipapp.errors import ClipAppError

    choice = (choice or "auto").lower()
    if choice not in ("auto", "fp32", "bf16"):  # finetune.config.TRAIN_PRECISIONS, checked there first
        raise ClipAppError(f"Unknown training precision {choice!r}: use auto, fp32 or bf16.")
    if choice == "bf16" or (choice == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32
