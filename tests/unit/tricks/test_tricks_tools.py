"""clipapp.tricks: sweeps and the package surface."""

from __future__ import annotations

import itertools

import pytest
import torch

import clipapp.tricks as tricks
from clipapp.errors import ClipAppError
from clipapp.tricks import run_sweep

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

    result = run_sweep(
        objective, {"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, method="bayes", n_trials=40, seed=0, direction="minimize"
    )
    assert len(calls) == 40 and len(result.trials) == 40
    assert result.best.value == min(t.value for t in result.trials)
    assert result.best.value < 0.5
    assert abs(result.best.params["x"] - 2.0) < 0.7 and abs(result.best.params["y"] + 1.0) < 0.7


def test_sweep_nan_trials_fail_without_winning():
    result = run_sweep(lambda s: float("nan") if s["a"] == 2 else s["a"], {"a": [1, 2, 0]}, method="grid")
    assert result.best.params["a"] == 1
    assert sum(t.value is None for t in result.trials) == 1


# ---------------------------------------------------------------- package


def test_package_exports_and_device_selection():
    for name in tricks.__all__:
        assert hasattr(tricks, name), name
    from clipapp.model.device import select_device

    assert tricks.select_device is select_device
    assert tricks.select_device("cpu") == torch.device("cpu")
