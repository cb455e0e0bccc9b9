"""Hyperparameter sweeps (grid, random, Bayesian) over settings dicts.

A grid is walked here (itertools.product, in the order the values are listed: nothing to sample, so no optuna);
random and Bayesian (TPE) sweeps are run by optuna, the optional `sweeps` extra (`pip install 'clipapp[sweeps]'`).

A `space` maps each setting to:
- a list: the values to try (grid, random or TPE choice);
- a tuple `(low, high)`: a uniform range (integers if both bounds are ints), `(low, high, "log")` log-uniform;
  not allowed for grid search;
- anything else: a fixed value passed through unchanged.
The objective gets one plain dict with every setting and returns the score.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clipapp.errors import ClipAppError
from clipapp.extras import import_extra

METHODS = ("grid", "random", "bayes")
_OPTUNA_TYPES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class SweepTrial:
    number: int
    params: dict[str, Any]
    value: float | None  # None when the trial failed (e.g. returned NaN)


@dataclass
class SweepResult:
    trials: list[SweepTrial]
    best: SweepTrial
    direction: str
    study: Any = field(repr=False, default=None)  # the optuna Study (random, bayes), for plots and analysis


def _parse_space(space: dict[str, Any]):
    fixed, choices, ranges = {}, {}, {}
    for name, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise ClipAppError(f"Sweep setting {name!r} has an empty list of values.")
            choices[name] = spec
        elif isinstance(spec, tuple):
            log = len(spec) == 3 and spec[2] == "log"
            if len(spec) not in (2, 3) or (len(spec) == 3 and not log) or not spec[0] < spec[1]:
                raise ClipAppError(f"Sweep range for {name!r} must be (low, high) or (low, high, 'log'), low < high.")
            if log and spec[0] <= 0:
                raise ClipAppError(f"Sweep range for {name!r} is log-scaled, so it must be positive.")
            ranges[name] = (spec[0], spec[1], log)
        else:
            fixed[name] = spec
    return fixed, choices, ranges


def run_sweep(
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, Any],
    *,
    method: str = "grid",
    n_trials: int | None = None,
    seed: int = 0,
    direction: str = "maximize",
) -> SweepResult:
    """Evaluate `objective` over `space`; returns every trial and the best one.

    - `grid`: every combination of the listed values, in their listed order (the first best wins a tie);
      `n_trials` caps it. Needs no optional dependency.
    - `random`: independent uniform draws (optuna `RandomSampler`); needs `n_trials`.
    - `bayes`: Tree-structured Parzen Estimator (`TPESampler`), better than random once ~10 trials are in,
      for the same budget; needs `n_trials`.
    The samplers are seeded by `seed`, so a sweep can be repeated. Exceptions in the objective propagate;
    a NaN score marks that trial failed.
    """
    if method not in METHODS:
        raise ClipAppError(f"Sweep method must be one of {', '.join(METHODS)}, got {method!r}.")
    if direction not in ("maximize", "minimize"):
        raise ClipAppError(f"Sweep direction must be 'maximize' or 'minimize', got {direction!r}.")
    fixed, choices, ranges = _parse_space(space)
    if method == "grid":
        if ranges:
            raise ClipAppError(f"Grid search needs a list of values for {', '.join(ranges)}, not a range.")
        return _grid(objective, fixed, choices, n_trials, direction)
    if not n_trials or n_trials < 1:
        raise ClipAppError(f"A {method} sweep needs n_trials >= 1.")
    optuna = import_extra("optuna", extra="sweeps", feature=f"A {method} sweep")
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    # optuna stores only primitive choices; others (tuples, dicts) are swept by their index
    by_index = {name for name, values in choices.items() if not all(isinstance(v, _OPTUNA_TYPES) for v in values)}

    def optuna_choices(name):
        return list(range(len(choices[name]))) if name in by_index else choices[name]

    def optuna_objective(trial) -> float:
        params = dict(fixed)
        for name, values in choices.items():
            picked = trial.suggest_categorical(name, optuna_choices(name))
            params[name] = values[picked] if name in by_index else picked
        for name, (low, high, log) in ranges.items():
            if isinstance(low, int) and isinstance(high, int):
                params[name] = trial.suggest_int(name, low, high, log=log)
            else:
                params[name] = trial.suggest_float(name, float(low), float(high), log=log)
        trial.set_user_attr("params", params)
        return float(objective(params))

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial is noise here
    try:
        study = optuna.create_study(direction=direction, sampler=sampler)
        study.optimize(optuna_objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)

    complete = optuna.trial.TrialState.COMPLETE
    trials = [
        SweepTrial(t.number, t.user_attrs.get("params", {}), t.value if t.state == complete else None)
        for t in study.trials
    ]
    if not any(t.value is not None for t in trials):
        raise ClipAppError("Every sweep trial failed (the objective returned NaN).")
    return SweepResult(trials, trials[study.best_trial.number], direction, study)


def _grid(
    objective, fixed: dict[str, Any], choices: dict[str, list], n_trials: int | None, direction: str
) -> SweepResult:
    names = list(choices)
    combos = itertools.product(*(choices[name] for name in names))
    trials = []
    for number, values in enumerate(itertools.islice(combos, n_trials)):
        params = {**fixed, **dict(zip(names, values, strict=True))}
        value = float(objective(params))
        trials.append(SweepTrial(number, params, None if math.isnan(value) else value))
    scores = {t.number: t.value for t in trials if t.value is not None}
    if not scores:
        raise ClipAppError("Every sweep trial failed (the objective returned NaN).")
    pick = max if direction == "maximize" else min
    return SweepResult(trials, trials[pick(scores, key=scores.__getitem__)], direction)
