"""The fine-tune planner (clipapp/finetune/plan.py): with step costs injected, it never picks a plan whose estimate
exceeds the budget, takes the strongest that fits, keeps the settings the user gave, and its step count is the one
the training loop makes; `finetune` says the plan before training and reports it with the time it took."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.finetune import FinetuneConfig, finetune, labelled_uploads
from clipapp.finetune.config import CANDIDATES, MODE_DEFAULTS, PLANNED
from clipapp.finetune.plan import StepCosts, candidate_configs, choose, describe, estimate
from tests.support.colour_images import colour_images

TARGETS = np.repeat(np.arange(10), 16)  # 16 shots x 10 classes, as the digits


def costs(mode: str, blocks: int) -> StepCosts:
    """Made-up costs in the shape of a real model's: the whole model per image, a tuned block per step."""
    if mode == "partial":
        return StepCosts(0.05, prefix_per_image=0.04, step=0.1 * blocks, forward_per_image=0.002 * blocks, setup=0.5)
    return StepCosts(0.05, step=0.001, forward_per_image=0.0001)


def all_estimates(config: FinetuneConfig) -> list[tuple[FinetuneConfig, float]]:
    return [(c, estimate(c, TARGETS, costs(c.mode, c.blocks)).total) for c in candidate_configs(config)]


@pytest.mark.parametrize("budget", [12.0, 60.0, 200.0, 400.0, 10_000.0])
def test_the_plan_fits_the_budget_and_is_the_strongest_that_does(budget):
    plan = choose(FinetuneConfig(), TARGETS, costs, budget)
    weighed = all_estimates(FinetuneConfig())
    chosen = next(i for i, (c, _) in enumerate(weighed) if c == plan.config)
    assert plan.fits and plan.seconds <= budget
    assert all(seconds > budget for _, seconds in weighed[:chosen])  # every stronger candidate is over the budget


def test_the_budgets_choose_different_plans():
    """The fixture's costs spread the candidates: a bigger budget buys a stronger schedule."""
    labels = [choose(FinetuneConfig(), TARGETS, costs, b).label for b in (12.0, 60.0, 200.0, 10_000.0)]
    assert len(set(labels)) == 4
    assert labels[-1] == CANDIDATES[0].label()


def test_below_every_candidate_the_cheapest_runs_and_the_plan_says_it_will_exceed():
    plan = choose(FinetuneConfig(), TARGETS, costs, 0.5)
    cheapest = min(all_estimates(FinetuneConfig()), key=lambda pair: pair[1])
    assert not plan.fits and plan.config == cheapest[0]
    assert "no plan fits the budget" in plan.line() and "budget 0.5 s" in plan.line()
    assert len(plan.considered) == len(candidate_configs(FinetuneConfig()))


def test_no_budget_is_the_strongest_and_only_it_is_measured():
    asked = []

    def counting(mode, blocks):
        asked.append((mode, blocks))
        return costs(mode, blocks)

    plan = choose(FinetuneConfig(budget="none"), TARGETS, counting, FinetuneConfig(budget="none").budget_seconds("cpu"))
    assert plan.fits and plan.budget is None and describe(plan.config) == CANDIDATES[0].label()
    assert asked == [(CANDIDATES[0].mode, CANDIDATES[0].blocks)]


def test_a_deeper_schedule_already_over_the_budget_at_a_shallower_depths_costs_is_not_timed():
    asked = []

    def counting(mode, blocks):
        asked.append((mode, blocks))
        return costs(mode, blocks)

    plan = choose(FinetuneConfig(), TARGETS, counting, 12.0)
    assert plan.fits and plan.config.mode != "partial"
    assert ("partial", 1) in asked and ("partial", 2) not in asked
    assert any(label.endswith("(at least)") and seconds > 12.0 for label, seconds in plan.considered)
    roomy = []
    choose(FinetuneConfig(), TARGETS, lambda m, b: roomy.append((m, b)) or costs(m, b), 10_000.0)
    assert roomy == [("partial", 1), ("partial", 2)]  # the strongest fits: timed itself, after the shallowest


def test_the_time_already_spent_counts_against_the_budget():
    free = choose(FinetuneConfig(), TARGETS, costs, 100.0)
    late = choose(FinetuneConfig(), TARGETS, costs, 100.0, elapsed=lambda: 30.0)
    assert late.seconds <= 100.0 and late.planning == 30.0
    assert late.estimate.total < free.estimate.total  # a cheaper schedule for the 30 s left


def test_settings_the_user_gave_win_over_the_planner():
    config = FinetuneConfig(mode="partial", epochs=30)
    assert config.automatic == {"blocks", "max_folds"}
    plan = choose(config, TARGETS, costs, 1.0)  # nothing fits: the cheapest with the user's settings
    assert (plan.config.mode, plan.config.epochs) == ("partial", 30)
    assert {c.mode for c in candidate_configs(config)} == {"partial"}
    head = choose(FinetuneConfig(mode="head", epochs=7), TARGETS, costs, 10_000.0)
    assert (head.config.mode, head.config.epochs) == ("head", 7)
    fixed = FinetuneConfig(mode="partial", blocks=3, epochs=5, max_folds=2)
    assert candidate_configs(fixed) == [fixed] and choose(fixed, TARGETS, costs, 1.0).config == fixed


def test_left_automatic_a_setting_is_the_strongest_candidates_value():
    config = FinetuneConfig()
    assert config.automatic == set(PLANNED)
    strongest = CANDIDATES[0]
    assert describe(config) == strongest.label()
    assert (strongest.epochs, strongest.max_folds) == (
        MODE_DEFAULTS[strongest.mode]["epochs"],
        MODE_DEFAULTS[strongest.mode]["max_folds"],
    )


def test_a_mode_that_cannot_run_is_skipped_with_its_reason():
    def no_partial(mode, blocks):
        if mode == "partial":
            raise ClipAppError("this tower cannot be split")
        return costs(mode, blocks)

    plan = choose(FinetuneConfig(), TARGETS, no_partial, 10_000.0)
    assert plan.config.mode == "head" and any("cannot be split" in s for s in plan.skipped)
    with pytest.raises(ClipAppError, match="No fine-tune schedule"):
        choose(FinetuneConfig(mode="partial"), TARGETS, no_partial, 10_000.0)


def test_a_bad_budget_is_one_line():
    with pytest.raises(ClipAppError, match="budget must be seconds"):
        FinetuneConfig(budget="soon").validate()
    assert FinetuneConfig(budget="2m").budget_seconds("cpu") == 120.0
    assert FinetuneConfig().budget_seconds("cpu") < FinetuneConfig().budget_seconds("cuda")


@pytest.mark.parametrize(
    "config",
    [FinetuneConfig(mode="head", epochs=3, max_folds=2), FinetuneConfig(mode="partial", epochs=2, kfold_below=2)],
    ids=["kfold", "holdout"],
)
def test_the_estimate_counts_at_least_the_steps_training_makes(tiny_service, config, monkeypatch):
    """One second a step and nothing else: the estimate is the step count, never below the loop's own (conservative:
    early stopping and the refit's chosen epoch count only save), and above it by no more than the refit."""
    from clipapp.finetune import loop

    made = []
    step = loop._Stepper.__call__
    monkeypatch.setattr(loop._Stepper, "__call__", lambda self, *a: made.append(1) or step(self, *a))
    data = labelled_uploads(colour_images(6))
    result = finetune(tiny_service, data, config, on_plan=lambda _: made.clear())  # the planner's timed steps out
    steps = estimate(result.config, np.asarray(data.targets), StepCosts(0.0, step=1.0)).train
    refit = loop.epoch_steps(len(data), result.config) * (result.config.epochs or 0)
    assert len(made) > 0 and len(made) <= steps <= len(made) + refit


def test_finetune_says_the_plan_before_training_and_reports_it_with_the_time_taken(tiny_service):
    events = []
    result = finetune(
        tiny_service,
        labelled_uploads(colour_images(4)),
        FinetuneConfig(mode="head", budget="none"),
        on_plan=lambda plan: events.append(("plan", plan.line())),
        progress=lambda done, total, message: events.append(("progress", message)),
    )
    assert events[0][0] == "plan" and "about" in events[0][1]
    report = result.to_dict()["plan"]
    assert report["plan"] == describe(result.config) and report["budget_s"] is None and report["fits"]
    assert report["actual_s"] == result.seconds["total"] and report["estimate_s"] > 0
