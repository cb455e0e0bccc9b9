"""The fine-tune planner: before training, estimate what each candidate schedule costs on this model and hardware
and choose the strongest whose estimate fits the time budget.

The candidates and their strength order are data (config.CANDIDATES). A setting the user gave is kept in every
candidate; the planner only fills the ones left automatic (`FinetuneConfig.automatic`). The costs per unit of work
(`StepCosts`: encoding an image, one training step, one validation forward) come from a callable, measured on the
loaded model by clipapp/finetune/measure.py or injected by tests, so this module only counts: how many images
are encoded, how many steps and validation forwards each run of the validation plan makes (the same k-fold or
held-out plan `finetune` will make, model_choice.plan_validation), and the refit.

Conservative by design: every run is counted at its full epoch count (k-fold runs never stop early, and the
refit's chosen epoch count is not known before training), and a held-out run's early stopping is not counted as a
saving either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.finetune.config import CANDIDATES, PLANNED, WISE_ALPHAS, Candidate, FinetuneConfig
from clipapp.finetune.model_choice import plan_validation

# fastest_threads (loop.py) times 4 forward + backward passes at each of two thread counts before training, unless
# the measured costs already chose the thread count (StepCosts.threads)
THREAD_PROBE_STEPS = 8


@dataclass(frozen=True)
class StepCosts:
    """What one unit of work costs, in seconds, for one (mode, blocks) on the loaded model and this hardware."""

    encode_per_image: float  # decoding an image and the whole model on it: the features every mode starts from
    prefix_per_image: float = 0.0  # partial mode: the frozen part below the tuned blocks, per image and view
    step: float = 0.0  # one training step of batch_size images: mixing, forward, loss, backward, optimiser, EMA
    forward_per_image: float = 0.0  # one image through what trains, without gradients (validation)
    per_run: float = 0.0  # a run's fresh model and its EMA copy
    setup: float = 0.0  # once: the tower copy partial mode trains
    threads: int = 0  # the CPU threads the step was timed with, chosen as training would (0: not chosen)


CostsFn = Callable[[str, int], StepCosts]  # (mode, blocks) -> its costs; raises ClipAppError where it cannot run


@dataclass(frozen=True)
class Estimate:
    """A candidate's expected seconds, by phase."""

    encode: float
    train: float
    setup: float = 0.0

    @property
    def total(self) -> float:
        return self.encode + self.train + self.setup

    def to_dict(self) -> dict[str, float]:
        return {"encode": round(self.encode, 2), "train": round(self.train, 2), "setup": round(self.setup, 2)}


def estimate(config: FinetuneConfig, targets: np.ndarray, costs: StepCosts) -> Estimate:
    """The seconds `finetune` should take with `config` on images labelled `targets`, from `costs`."""
    from clipapp.finetune.loop import epoch_steps

    n = len(targets)
    encode = n * costs.encode_per_image
    if config.mode == "cache":
        return Estimate(encode, 0.0)  # a grid search over the cached features: milliseconds
    assert config.epochs is not None and config.views is not None  # filled by FinetuneConfig.__post_init__
    step = costs.step
    if config.mode == "partial":
        if config.mix_space == "pixels":  # the frozen part runs at every step instead of once
            step += config.batch_size * costs.prefix_per_image
        else:
            encode += n * config.views * costs.prefix_per_image
    plan = plan_validation(np.asarray(targets, dtype=np.int64), config)
    alphas = len(WISE_ALPHAS) if config.wise_alpha is None else 1
    steps = forwards = runs = 0
    for train_idx, val_idx in plan.splits:
        runs += 1
        steps += epoch_steps(len(train_idx), config) * config.epochs
        # epoch 0 scores the training images and every blend; later epochs every blend but alpha 0 (reused)
        forwards += len(train_idx) + len(val_idx) * alphas + config.epochs * len(val_idx) * max(1, alphas - 1)
    if plan.kind == "kfold" or (plan.kind == "holdout" and config.refit):
        runs += 1
        steps += epoch_steps(max(len(t) for t, _ in plan.splits), config) * config.epochs
        forwards += n
    train = steps * step + forwards * costs.forward_per_image + runs * costs.per_run
    probe = 0 if costs.threads else THREAD_PROBE_STEPS * costs.step
    return Estimate(encode, train, costs.setup + probe)


def candidate_configs(config: FinetuneConfig, candidates: Sequence[Candidate] = CANDIDATES) -> list[FinetuneConfig]:
    """The concrete configs the planner may run, strongest first: each candidate's schedule in the settings the
    user left automatic, the user's own value in every other (a fixed mode keeps only that mode's candidates)."""
    automatic = config.automatic
    if not automatic:
        return [config]
    found: dict[tuple, FinetuneConfig] = {}
    for candidate in candidates:
        if "mode" not in automatic and candidate.mode != config.mode:
            continue
        values = {name: getattr(candidate, name) for name in PLANNED if name in automatic}
        if candidate.mode != "partial":
            values.pop("blocks", None)  # nothing of the tower trains: the user's (or default) value stands
        chosen = dataclasses.replace(config, **values)
        found.setdefault(tuple(getattr(chosen, name) for name in PLANNED), chosen)
    if not found:
        raise ClipAppError(f"No fine-tune schedule for mode {config.mode!r}.")  # every mode has candidates
    return list(found.values())


def describe(config: FinetuneConfig) -> str:
    """A concrete config's schedule in words, as a candidate's label."""
    assert config.mode is not None and config.epochs is not None and config.max_folds is not None
    return Candidate(config.mode, config.blocks or 0, config.epochs, config.max_folds).label()


@dataclass
class Plan:
    """The planner's choice: the config that runs, its estimate, and what else was weighed."""

    config: FinetuneConfig  # concrete: every PLANNED setting set
    estimate: Estimate
    costs: StepCosts  # the chosen schedule's, as measured (or injected)
    budget: Optional[float]  # seconds; None = no limit
    fits: bool
    planning: float = 0.0  # seconds spent measuring before the choice (part of the total)
    considered: list[tuple[str, float]] = field(default_factory=list)  # (label, estimated total) as weighed
    skipped: list[str] = field(default_factory=list)  # candidates that cannot run on this model, and why

    @property
    def label(self) -> str:
        return describe(self.config)

    @property
    def seconds(self) -> float:
        """The whole fine-tune's expected seconds, the planning already spent included."""
        return self.planning + self.estimate.total

    def line(self) -> str:
        """ "about 50 s: head + last 1 block, 20 epochs x 3 folds (budget 60 s)": said before training starts."""
        budget = "no time budget" if self.budget is None else f"budget {self.budget:g} s"
        text = f"about {_rounded(self.seconds)} s: {self.label} ({budget})"
        if not self.fits:
            text += "; no plan fits the budget, so the cheapest runs and will take longer"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.label,
            "mode": self.config.mode,
            "blocks": self.config.blocks if self.config.mode == "partial" else 0,
            "epochs": self.config.epochs,
            "max_folds": self.config.max_folds,
            "estimate_s": round(self.seconds, 1),
            "estimate": {**self.estimate.to_dict(), "planning": round(self.planning, 2)},
            "budget_s": self.budget,
            "fits": self.fits,
            "considered": [{"plan": label, "estimate_s": round(s, 1)} for label, s in self.considered],
            "skipped": list(self.skipped),
        }


def _rounded(seconds: float) -> int:
    """Two significant figures: an estimate is no better than that."""
    return int(float(f"{max(1.0, seconds):.2g}"))


def choose(
    config: FinetuneConfig,
    targets: np.ndarray,
    costs: CostsFn,
    budget: Optional[float],
    *,
    elapsed: Callable[[], float] = lambda: 0.0,
    candidates: Sequence[Candidate] = CANDIDATES,
) -> Plan:
    """The strongest candidate whose estimate, with the seconds already spent (`elapsed()`: reading the images,
    measuring), fits `budget` (None: the strongest); when none fits, the cheapest. Candidates are weighed in
    strength order and costs asked for only as needed, so a measured `costs` times only the modes and depths that
    might run: under a budget the shallowest partial depth is timed first, and a deeper candidate whose estimate at
    that depth's costs (a lower bound, `_KnownCosts.bound`) is already over the budget is passed over untimed
    (ViT-B-32: 3.7 s of planning at the default 60 s, where timing both depths took 11.8 s; bench_budget.py)."""
    options = candidate_configs(config, candidates)
    known = _KnownCosts(costs)
    if budget is not None:
        known.shallowest_first(options)
    considered: list[tuple[str, float]] = []
    weighed: list[tuple[FinetuneConfig, Estimate, StepCosts]] = []
    for option in options:
        bound = known.bound(option)
        if bound is not None and budget is not None:
            least = elapsed() + estimate(option, targets, bound).total
            if least > budget:
                considered.append((describe(option) + " (at least)", least))
                continue
        cost = known(option)
        if cost is None:  # e.g. a tower partial mode cannot split: known.skipped says why
            continue
        guess, spent = estimate(option, targets, cost), elapsed()
        considered.append((describe(option), spent + guess.total))
        weighed.append((option, guess, cost))
        if budget is None or spent + guess.total <= budget:
            return Plan(option, guess, cost, budget, True, spent, considered, known.skipped)
    if not weighed:
        raise ClipAppError("No fine-tune schedule can run on this model: " + "; ".join(known.skipped))
    option, guess, cost = min(weighed, key=lambda weighed_: weighed_[1].total)
    return Plan(option, guess, cost, budget, False, elapsed(), considered, known.skipped)


class _KnownCosts:
    """`costs` asked once per (mode, depth) and remembered, with what could not run and why."""

    def __init__(self, costs: CostsFn):
        self._costs = costs
        self._found: dict[tuple[str, int], Optional[StepCosts]] = {}
        self.skipped: list[str] = []

    @staticmethod
    def _key(option: FinetuneConfig) -> tuple[str, int]:
        return option.mode or "", (option.blocks or 0) if option.mode == "partial" else 0

    def __call__(self, option: FinetuneConfig) -> Optional[StepCosts]:
        key = self._key(option)
        if key not in self._found:
            try:
                self._found[key] = self._costs(*key)
            except ClipAppError as exc:
                self._found[key] = None
                self.skipped.append(f"{describe(option)}: {exc}")
        return self._found[key]

    def shallowest_first(self, options: list[FinetuneConfig]) -> None:
        """Time the shallowest partial depth among `options` now, so deeper ones can be bounded by it."""
        partial = [option for option in options if option.mode == "partial"]
        if len({option.blocks for option in partial}) > 1:
            self(min(partial, key=lambda option: option.blocks or 0))

    def bound(self, option: FinetuneConfig) -> Optional[StepCosts]:
        """Costs no higher than `option`'s, from a shallower depth already timed (None: none is): more tuned blocks
        make every step, forward and copy dearer; only the frozen part below them gets cheaper, so it is left out."""
        mode, blocks = self._key(option)
        if (mode, blocks) in self._found:
            return None  # timed itself
        shallower = [(b, c) for (m, b), c in self._found.items() if m == mode and b < blocks and c is not None]
        if not shallower:
            return None
        return dataclasses.replace(max(shallower, key=lambda pair: pair[0])[1], prefix_per_image=0.0)
