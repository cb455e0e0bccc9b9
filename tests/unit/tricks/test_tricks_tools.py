"""clipapp.tricks: sweeps, experiment logging, parameter summaries, package surface."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

import clipapp.tricks as tricks
from clipapp.errors import ClipAppError
from clipapp.tricks import ExperimentLogger, format_summary, freeze_by_pattern, parameter_summary, run_sweep

# ---------------------------------------------------------------- sweeps


def test_grid_sweep_enumerates_the_product_once_each():
    calls = []

    def objective(settings):
        calls.append(dict(settings))
        return settings["lr"] * 10 + settings["layers"]

    space = {"lr": [0.1, 0.01, 0.001], "layers": [1, 2], "optimizer": ["adam", "sgd"], "epochs": 3}
    result = run_sweep(objective, space, method="grid")
    combos = {(c["lr"], c["layers"], c["optimizer"]) for c in calls}
    assert len(calls) == 12 and combos == set(itertools.product([0.1, 0.01, 0.001], [1, 2], ["adam", "sgd"]))
    assert all(c["epochs"] == 3 for c in calls)  # fixed settings pass through
    assert len(result.trials) == 12
    assert result.best.params["lr"] == 0.1 and result.best.params["layers"] == 2
    assert result.best.value == pytest.approx(3.0)


def test_grid_sweep_takes_non_primitive_choices_and_rejects_ranges():
    result = run_sweep(lambda s: -s["size"][0], {"size": [(224, 224), (160, 160)]}, method="grid")
    assert result.best.params["size"] == (160, 160)
    with pytest.raises(ClipAppError, match="lr"):
        run_sweep(lambda s: 0.0, {"lr": (1e-4, 1e-1)}, method="grid")


def test_random_sweep_samples_within_ranges_and_is_seeded():
    space = {"lr": (1e-5, 1e-1, "log"), "layers": (1, 4), "act": ["relu", "gelu"]}
    a = run_sweep(lambda s: s["lr"], space, method="random", n_trials=15, seed=7)
    b = run_sweep(lambda s: s["lr"], space, method="random", n_trials=15, seed=7)
    assert len(a.trials) == 15
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    for trial in a.trials:
        assert 1e-5 <= trial.params["lr"] <= 1e-1
        assert trial.params["layers"] in (1, 2, 3, 4) and isinstance(trial.params["layers"], int)
        assert trial.params["act"] in ("relu", "gelu")
    with pytest.raises(ClipAppError, match="n_trials"):
        run_sweep(lambda s: 0.0, space, method="random")


def test_bayes_sweep_finds_the_optimum_of_a_quadratic():
    calls = []

    def objective(settings):
        calls.append(settings)
        return (settings["x"] - 2.0) ** 2 + (settings["y"] + 1.0) ** 2

    result = run_sweep(objective, {"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, method="bayes", n_trials=40, seed=0,
                       direction="minimize")
    assert len(calls) == 40 and len(result.trials) == 40
    assert result.best.value == min(t.value for t in result.trials)
    assert result.best.value < 0.5
    assert abs(result.best.params["x"] - 2.0) < 0.7 and abs(result.best.params["y"] + 1.0) < 0.7


def test_sweep_nan_trials_fail_without_winning():
    result = run_sweep(lambda s: float("nan") if s["a"] == 2 else s["a"], {"a": [1, 2, 0]}, method="grid")
    assert result.best.params["a"] == 1
    assert sum(t.value is None for t in result.trials) == 1


# ---------------------------------------------------------------- experiment logging


def test_experiment_logger_writes_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with ExperimentLogger(tmp_path / "run1") as logger:
        for step in range(5):
            logger.log_scalars(step, loss=1.0 / (step + 1), **{"val/acc": torch.tensor(0.1 * step)})
        logger.log_hparams({"lr": 0.01, "model": "ViT-B-32", "layers": None}, {"final/acc": 0.4})
        assert logger.snapshot()["loss"] == [(s, 1.0 / (s + 1)) for s in range(5)]

    files = list((tmp_path / "run1").glob("events.out.tfevents.*"))
    assert len(files) == 1  # hparams go into the same run, not a new sub-directory
    acc = EventAccumulator(str(tmp_path / "run1"))
    acc.Reload()
    assert {"loss", "val/acc", "final/acc"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(5))
    assert [e.value for e in loss] == pytest.approx([1.0 / (s + 1) for s in range(5)])
    assert [e.value for e in acc.Scalars("val/acc")] == pytest.approx([0.1 * s for s in range(5)])
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    logged = start.session_start_info.hparams
    assert logged["lr"].number_value == 0.01 and logged["model"].string_value == "ViT-B-32"
    assert logged["layers"].string_value == "None"  # non-scalar settings are logged as text
    assert logger.history["val/acc"][-1] == (4, pytest.approx(0.4))


def test_experiment_logger_without_wandb_installed_still_logs(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    logger = ExperimentLogger(tmp_path, use_wandb=True)
    logger.log_scalars(0, loss=1.0)
    logger.close()
    assert logger.wandb_run is None and "wandb" in caplog.text


# ---------------------------------------------------------------- summary and package


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)
        self.logit_scale = nn.Parameter(torch.ones([]))


def test_parameter_summary_counts_match_the_model():
    model = Net()
    freeze_by_pattern(model, ["encoder.0.*"])
    rows = parameter_summary(model, depth=1)
    assert [r.name for r in rows] == ["logit_scale", "encoder", "head"]  # named_parameters() order
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(r.trainable for r in rows) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    enc = rows[1]
    assert enc.frozen == 8 * 16 + 16 and enc.params == sum(p.numel() for p in model.encoder.parameters())
    assert all(r.params == r.trainable + r.frozen for r in rows)
    deeper = parameter_summary(model, depth=2)
    assert [r.name for r in deeper] == ["logit_scale", "encoder.0", "encoder.1", "encoder.2", "head"]
    assert sum(r.params for r in deeper) == sum(r.params for r in rows)
    text = format_summary(rows)
    assert "encoder" in text and f"{sum(r.params for r in rows):,}" in text.splitlines()[-1]


def test_package_exports_and_device_selection():
    for name in tricks.__all__:
        assert hasattr(tricks, name), name
    from clipapp.model.device import select_device

    assert tricks.select_device is select_device
    assert tricks.select_device("cpu") == torch.device("cpu")
