"""The device rules of clipapp/model/device.py that need no GPU."""

from __future__ import annotations

import pytest

from clipapp.model.device import cluster_precision


@pytest.mark.parametrize(("given", "used"), [("auto", "fp32"), ("AUTO", "fp32"), ("", "fp32"), ("fp16", "fp16")])
def test_a_ray_cluster_runs_auto_at_fp32_and_an_explicit_precision_as_given(given, used):
    assert cluster_precision(given) == used


@pytest.mark.parametrize(
    ("native", "choice", "dtype"),
    [
        (True, "auto", "bfloat16"),
        (False, "auto", "float32"),
        (True, "fp32", "float32"),
        (False, "bf16", "bfloat16"),
    ],
)
def test_training_runs_in_bf16_where_the_cpu_has_it_unless_told(monkeypatch, native, choice, dtype):
    import torch

    from clipapp.model import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert device.training_dtype(choice, torch.device("cpu")) == getattr(torch, dtype)


def test_an_unknown_training_precision_is_one_line():
    import torch

    from clipapp.errors import ClipAppError
    from clipapp.finetune import FinetuneConfig
    from clipapp.model.device import training_dtype

    with pytest.raises(ClipAppError, match="use auto, fp32 or bf16"):
        training_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ClipAppError, match="train_precision must be one of auto, fp32, bf16"):
        FinetuneConfig(train_precision="fp16").validate()


def test_a_gpu_trains_in_bf16_only_where_it_has_bf16_in_hardware(monkeypatch):
    import torch

    from clipapp.model import device

    asked = []
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation) or False
    )
    assert device.training_dtype("auto", torch.device("cuda")) == torch.float32
    assert asked == [False]  # emulated bf16 (pre-Ampere) is no speed-up: not counted
