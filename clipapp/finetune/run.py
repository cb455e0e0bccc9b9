"""`finetune`: labelled images -> an adapter, with the held-out evidence that it beats zero-shot.

The steps: encode the images and prompts; plan the validation (k-fold or a held-out split); run the frozen part
of the model once per image and view (features.py); train one run per fold (loop.py) and choose the epoch count
and WiSE blend on the held-out images (model_choice.py); keep zero-shot unless the sign test says the adapter is
better; refit on every image; assemble the adapter (assemble.py).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from clipapp.errors import ClipAppError
from clipapp.finetune.adapter import Adapter
from clipapp.finetune.assemble import cache_adapter, trained_adapter
from clipapp.finetune.config import FinetuneConfig, StopFlag
from clipapp.finetune.features import EncodedImages, TrainingSetup, encode_labelled, prepare_training
from clipapp.finetune.intake import LabelledImages, labelled_folder
from clipapp.finetune.loop import Run, epoch_steps, fastest_threads, torch_threads, train_run
from clipapp.finetune.measure import MeasuredCosts
from clipapp.finetune.model_choice import (
    Selection,
    ValidationPlan,
    beats_zero_shot,
    choose_across_folds,
    choose_in_run,
    fit_cache,
    plan_validation,
)
from clipapp.finetune.plan import Plan, choose
from clipapp.finetune.results import FinetuneResult, confusion_counts, metrics_from_logits
from clipapp.images.archive import labelled_root
from clipapp.model.prompts import resolve_templates
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn


class _PlanProgress:
    """Fine-tuning's progress in the one protocol (clipapp.progress): `done` of `total` units of the whole plan, a
    unit being an image encoded or an epoch of one training run (the refit on every image is a run too).

    The total is sized before any image is decoded, from the labels and the validation plan they give, and never
    changes, so the page's bar and the CLI's never go back. The runs share the training units in order and in
    proportion: one unit an epoch, unless unreadable images changed the plan; a run that ends early (early
    stopping, the refit's chosen epoch count) jumps to the next one's start, and `finish` to the total."""

    def __init__(self, progress: Optional[ProgressFn], n_images: int, train_units: int):
        self._progress = progress
        self._images = n_images
        self._train = max(1, train_units)  # the cache's grid search, without epochs, counts as one unit
        self.total = n_images + self._train
        self.done = 0

    def __call__(self, done: int, message: str) -> None:
        self.done = min(self.total, max(self.done, done))  # monotone, and never past the total
        if self._progress is not None:
            self._progress(self.done, self.total, message)

    def encoding(self, done: int, total: int, message: str) -> None:
        self(self._images * done // max(1, total), message)

    def run(self, index: int, runs: int) -> ProgressFn:
        """The progress callback of training run `index` (from 0) of `runs`: its share of the training units."""

        def progress(done: int, total: int, message: str) -> None:
            total = max(1, total)  # integer arithmetic: with the planned runs, an epoch is exactly one unit
            self(self._images + self._train * (index * total + min(done, total)) // (max(1, runs) * total), message)

        return progress

    def finish(self) -> None:
        self(self.total, "done")


def _refits(plan: ValidationPlan, config: FinetuneConfig) -> bool:
    """Whether training ends with a run on every image: k-fold always does, a held-out split if asked to."""
    return plan.kind == "kfold" or (plan.kind == "holdout" and config.refit)


def _training_units(data: LabelledImages, config: FinetuneConfig) -> int:
    """The epochs of every run the labels' validation plan will train (0 for the cache, which does not train).
    Planned on the labels, before decoding: an unreadable image may change the plan made after it (rarely)."""
    if config.mode == "cache":
        return 0
    assert config.epochs is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    plan = plan_validation(np.asarray(data.targets, dtype=np.int64), config)
    return (len(plan.splits) + _refits(plan, config)) * config.epochs


@dataclass
class _Trained:
    """What training and selection decided."""

    state: dict[str, torch.Tensor]
    selection: Selection
    stopped: bool = False
    notes: list[str] = field(default_factory=list)


def finetune(
    service: ClipService,
    data: LabelledImages,
    config: Optional[FinetuneConfig] = None,
    *,
    name: str = "adapter",
    progress: Optional[ProgressFn] = None,
    on_epoch: Optional[Callable[[dict], None]] = None,
    on_plan: Optional[Callable[[Plan], None]] = None,
    stop: StopFlag = None,
) -> FinetuneResult:
    """Adapt `service`'s model to `data`'s classes; returns the adapter and the evidence that it is better.

    First the planner (plan.py) times a few steps and fills the settings left automatic with the strongest
    schedule that fits the budget; `on_plan(plan)` hears its choice and estimate before any training.
    `progress(done, total, message)` (clipapp.progress) is called as work advances, counting the whole plan once
    (`_PlanProgress`); `on_epoch(history)` after every epoch with the current run's curves (for live plots); setting
    `stop` (an Event or a callable) ends training at the next step and keeps the best model so far. The resident
    model is only read.
    """
    config = (config or FinetuneConfig()).validate()
    started = time.perf_counter()
    class_names = _checked_classes(data, config)
    templates = list(resolve_templates(config.templates))
    # the class prompts first: every schedule needs them, and the seconds they take (80 templates a class with
    # "openai") count against the budget as time already spent
    zero_shot = service.text_embeddings(class_names, templates)
    chosen = choose(
        config,
        np.asarray(data.targets, dtype=np.int64),
        MeasuredCosts(service, data, config),
        config.budget_seconds(service.device.type),
        elapsed=lambda: time.perf_counter() - started,
    )
    config = chosen.config.validate()
    if on_plan is not None:
        on_plan(chosen)
    report = _PlanProgress(progress, len(data), _training_units(data, config))

    report(0, "encoding images")
    encoded = encode_labelled(service, data, stop=stop, progress=report.encoding)
    timings = {"plan": chosen.planning, "encode": time.perf_counter() - started - chosen.planning}
    counts = _check_counts(encoded, class_names)
    notes = []
    if config.mode != "partial" and config.cutmix > 0:
        notes.append(
            "CutMix needs spatial inputs (pixels or a tower's activation maps): it applies in mode "
            "'partial' only and was not used."
        )
    plan = plan_validation(encoded.targets, config)
    logit_scale = float(service.logit_scale)
    zero_logits = logit_scale * encoded.features @ zero_shot.T
    held_out = np.concatenate([v for _, v in plan.splits]) if plan.kind != "none" else np.zeros(0, dtype=np.int64)
    adapter_kwargs = dict(
        name=name, class_names=class_names, spec=service.spec, logit_scale=logit_scale, templates=templates
    )

    if config.mode == "cache":
        adapter, trained = _cache_adapter(
            encoded, plan, zero_logits, zero_shot, held_out, config, notes, adapter_kwargs
        )
    else:
        setup = prepare_training(service, encoded, config, _start_weights(config, zero_shot))
        if config.views is not None and setup.views < config.views:
            notes.append(f"Cached {setup.views} views per image, not {config.views}: more would not fit in memory.")
        trained = _train_and_select(
            setup, encoded, plan, zero_logits, config, report, on_epoch, stop, service, chosen.costs.threads
        )
        notes += trained.notes
        adapter = trained_adapter(setup, trained.state, trained.selection.best_alpha, config, **adapter_kwargs)
    timings["train"] = time.perf_counter() - started - timings["encode"] - chosen.planning  # every run and the refit
    timings["total"] = time.perf_counter() - started
    result = _result(
        adapter, encoded, plan, trained.selection.held_out, zero_logits, trained, counts, notes, timings, config
    )
    result.plan = chosen
    report.finish()
    return result


def _checked_classes(data: LabelledImages, config: FinetuneConfig) -> list[str]:
    """The class names, once the set is one fine-tuning takes (at most max_images images, at least 2 classes)."""
    if len(data) > config.max_images:
        raise ClipAppError(f"{len(data)} images given; fine-tuning takes at most {config.max_images}.")
    class_names = list(data.class_names)
    if len(class_names) < 2:
        raise ClipAppError("Fine-tuning needs at least 2 classes.")
    return class_names


def _cache_adapter(
    encoded: EncodedImages,
    plan: ValidationPlan,
    zero_logits: np.ndarray,
    zero_shot: np.ndarray,
    held_out: np.ndarray,
    config: FinetuneConfig,
    notes: list[str],
    adapter_kwargs: dict,
) -> tuple[Adapter, _Trained]:
    """Cache mode: alpha and beta chosen on the held-out images, zero-shot kept unless the cache beats it."""
    class_names = adapter_kwargs["class_names"]
    after_logits, best = fit_cache(encoded.features, encoded.targets, zero_logits, plan, config, len(class_names))
    if (
        config.require_gain
        and plan.kind != "none"
        and not beats_zero_shot(after_logits, zero_logits, encoded.targets, held_out, config.gain_p_value)
    ):
        after_logits, best = zero_logits.copy(), (0.0, best[1])
        notes.append(
            "The cache did not clearly beat zero-shot on the held-out images (sign test): its weight is set to 0."
        )
    adapter = cache_adapter(encoded.features, encoded.targets, zero_shot, best[0], best[1], **adapter_kwargs)
    notes.append(
        f"cache alpha {best[0]:g}, beta {best[1]:g}"
        + (" (chosen on held-out data)" if plan.kind != "none" else " (defaults: no held-out data)")
    )
    trained = _Trained({}, Selection(0, 1.0, after_logits, {}, held_out))
    return adapter, trained


def _check_counts(encoded: EncodedImages, class_names: list[str]) -> np.ndarray:
    counts = np.bincount(encoded.targets, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ClipAppError(
            f"No usable image for class(es) {', '.join(map(repr, empty))}"
            + (f" ({'; '.join(encoded.skipped[:3])})" if encoded.skipped else "")
            + "."
        )
    return counts


def _start_weights(config: FinetuneConfig, zero_shot: np.ndarray) -> np.ndarray:
    if config.head_init != "random":
        return zero_shot
    # A probe from scratch, for comparison: the head starts at (and the anchor pull and WiSE go towards) random
    # directions instead of the zero-shot classifier.
    generator = torch.Generator().manual_seed(config.seed)
    return F.normalize(torch.randn(zero_shot.shape, generator=generator), dim=-1).numpy()


def _train_and_select(
    setup: TrainingSetup,
    encoded: EncodedImages,
    plan: ValidationPlan,
    zero_logits: np.ndarray,
    config: FinetuneConfig,
    report: _PlanProgress,
    on_epoch,
    stop: StopFlag,
    service: ClipService,
    threads: int = 0,
) -> _Trained:
    """One run per fold (or the held-out split), the choice of epoch and blend, the sign test, then the refit."""
    targets = encoded.targets
    refits = _refits(plan, config)
    n_runs = len(plan.splits) + refits
    run = functools.partial(
        train_run,
        build_model=setup.build_model,
        inputs=setup.inputs,
        targets=targets,
        n_classes=zero_logits.shape[1],
        config=config,
        grid=setup.grid,
        stop=stop,
    )
    if not threads:  # the planner's timing chose it already, on the same model and batch size
        threads = fastest_threads(setup.build_model(), setup.inputs, service.device, batch_size=config.batch_size)
    with torch_threads(threads):
        runs = _validation_runs(run, plan, config, report, n_runs, on_epoch)
        stopped = runs[-1].stopped
        selection, state = _select(runs, plan, zero_logits, targets, config, stopped)
        notes: list[str] = []
        if selection.best_epoch == 0:
            state = setup.build_model().state_dict()  # the start: the zero-shot classifier
            notes += _kept_zero_shot_notes(plan, np.bincount(targets))
        elif refits and not stopped:
            refit = _refit(setup, plan, config, run, report.run(n_runs - 1, n_runs), selection.best_epoch)
            if not refit.stopped or plan.kind == "kfold":
                state = refit.state
            if refit.stopped:
                stopped = True
                notes.append("Stopped while training on all images: kept the model trained without the held-out part.")
    if state is None:  # not reached: k-fold refits or keeps zero-shot, every other plan has its run's state
        raise RuntimeError("fine-tuning ended without a model state")
    trained = _Trained(state, selection, stopped, notes)
    if config.wise_alpha is None and plan.kind != "none" and selection.best_epoch > 0:
        alpha = selection.best_alpha
        trained.notes.append(
            f"WiSE-FT alpha {alpha:g} chosen on the held-out images"
            + (": the zero-shot weights were best, kept as they are." if alpha == 0 else ".")
        )
    return trained


def _validation_runs(
    run: Callable[..., Run],
    plan: ValidationPlan,
    config: FinetuneConfig,
    report: _PlanProgress,
    n_runs: int,
    on_epoch,
) -> list[Run]:
    """One training run per fold (or the held-out split, or every image without validation), until one stops."""
    assert config.epochs is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    runs: list[Run] = []
    for i, (train_idx, val_idx) in enumerate(plan.splits):
        runs.append(
            run(
                train_idx=train_idx,
                val_idx=val_idx,
                epochs=config.epochs,
                early_stop=plan.kind == "holdout",
                seed=config.seed + i,
                stage=f"fold {i + 1}/{len(plan.splits)}: " if plan.kind == "kfold" else "",
                on_epoch=on_epoch,
                progress=report.run(i, n_runs),
            )
        )
        if runs[-1].stopped:
            break
    return runs


def _select(
    runs: list[Run],
    plan: ValidationPlan,
    zero_logits: np.ndarray,
    targets: np.ndarray,
    config: FinetuneConfig,
    stopped: bool,
) -> tuple[Selection, Optional[dict[str, torch.Tensor]]]:
    """The epoch count and blend chosen on the held-out images, and the weights to keep (None: the refit trains
    them). The selection's epoch is 0, keeping zero-shot, when the sign test says training did not beat it."""
    n_classes = zero_logits.shape[1]
    state: Optional[dict[str, torch.Tensor]]
    if plan.kind == "kfold" and not stopped:
        selection = choose_across_folds(runs, plan, len(targets), n_classes)
        state = None  # the refit on every image trains the model (k-fold always refits)
    else:  # a held-out split (or no validation, or a stop): the last run's best weights are the model
        last_val = plan.splits[len(runs) - 1][1] if plan.kind != "none" else None
        selection = choose_in_run(runs[-1], last_val, len(targets), n_classes)
        state = runs[-1].state
    if (
        selection.best_epoch > 0
        and config.require_gain
        and plan.kind != "none"
        and not beats_zero_shot(selection.after_logits, zero_logits, targets, selection.held_out, config.gain_p_value)
    ):
        selection.best_epoch, selection.after_logits = 0, zero_logits.copy()
    return selection, state


def _kept_zero_shot_notes(plan: ValidationPlan, counts: np.ndarray) -> list[str]:
    if plan.kind == "none":
        return []
    if counts[counts > 0].min() < 2:
        return [
            "A class has a single image, so every held-out image belongs to a class its fold never trained on "
            "and cannot show a gain: the adapter keeps the zero-shot classifier. Add a second image per class."
        ]
    return [
        "Training did not clearly beat zero-shot on the held-out images (sign test): the adapter keeps the "
        "zero-shot classifier."
    ]


def _refit(
    setup: TrainingSetup,
    plan: ValidationPlan,
    config: FinetuneConfig,
    run: Callable[..., Run],
    progress: ProgressFn,
    best_epoch: int,
) -> Run:
    """Train again on every image for the chosen epoch count, with the validation runs' step schedule."""
    everything = np.arange(len(setup.inputs))
    progress(0, best_epoch, f"training on all images for {best_epoch} epochs")
    fold_steps = epoch_steps(max(len(t) for t, _ in plan.splits), config)
    return run(
        train_idx=everything,
        val_idx=everything[:0],
        epochs=best_epoch,
        early_stop=False,
        seed=config.seed + 1000,
        stage="all images: ",
        steps_per_epoch=fold_steps,
        progress=progress,
    )


def _result(
    adapter,
    encoded: EncodedImages,
    plan: ValidationPlan,
    held_out: np.ndarray,
    zero_logits: np.ndarray,
    trained: _Trained,
    counts: np.ndarray,
    notes: list[str],
    timings: dict[str, float],
    config: FinetuneConfig,
) -> FinetuneResult:
    """Before/after metrics and confusions on the held-out images, and the adapter's stored metrics."""
    n_classes = zero_logits.shape[1]
    selection = trained.selection
    before = after = conf_before = conf_after = None
    if plan.kind != "none" and len(held_out):
        y = encoded.targets[held_out]
        before = metrics_from_logits(zero_logits[held_out], y)
        after = metrics_from_logits(selection.after_logits[held_out], y)
        conf_before = confusion_counts(zero_logits[held_out].argmax(1), y, n_classes)
        conf_after = confusion_counts(selection.after_logits[held_out].argmax(1), y, n_classes)
    else:
        notes.append("Too few images to hold any out: no before/after numbers. Add images (2+ per class).")
    validation = {
        "kind": plan.kind,
        "folds": len(plan.splits) if plan.kind == "kfold" else 0,
        "n_images": int(len(encoded.targets)),
        "n_held_out": int(len(held_out)),
        "per_class": counts.tolist(),
    }
    adapter.config = config.to_dict()
    adapter.metrics = {
        "before": before,
        "after": after,
        "validation": validation,
        "best_epoch": selection.best_epoch,
        "wise_alpha": None if config.mode == "cache" else selection.best_alpha,
    }
    return FinetuneResult(
        adapter=adapter,
        before=before,
        after=after,
        confusion_before=conf_before,
        confusion_after=conf_after,
        history=selection.history,
        validation=validation,
        best_epoch=selection.best_epoch,
        stopped=trained.stopped,
        skipped=encoded.skipped,
        notes=notes + trained.notes,
        seconds={k: round(v, 3) for k, v in timings.items()},
        config=config,
    )


def finetune_folder(
    service: ClipService,
    data_dir: str | os.PathLike,
    config: Optional[FinetuneConfig] = None,
    *,
    out: Optional[str | os.PathLike] = None,
    **kwargs,
) -> FinetuneResult:
    """`finetune` on DATA_DIR/<class>/<images> (or a .zip of that layout); saves the adapter to `out` if given."""
    with labelled_root(data_dir) as root:
        return finetune_labelled(service, labelled_folder(root), config, out=out, **kwargs)


def finetune_labelled(
    service: ClipService,
    data: LabelledImages,
    config: Optional[FinetuneConfig] = None,
    *,
    out: Optional[str | os.PathLike] = None,
    **kwargs,
) -> FinetuneResult:
    """`finetune` on any `LabelledImages` (folders, `--class` lists, a CSV); saves the adapter to `out` if given."""
    name = Path(out).name.removesuffix(".safetensors").removesuffix(".json") if out else "adapter"
    result = finetune(service, data, config, name=name, **kwargs)
    if out:
        result.adapter.save(out)
    return result
