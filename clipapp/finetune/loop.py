"""The training loop: one run trains a fresh model on some images and scores it on the others after every epoch.

Pieces: the optimiser (head in logit units, layer-wise decay for tuned blocks), the mixer (mixup / CutMix on the
cached inputs, or on pixels), one optimisation step (`_Stepper`: mixing, loss, SAM, clipping, EMA), the per-epoch
validation at every WiSE blend (`_Validator`: curves, early stopping), and the CPU thread count the run uses.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp.finetune.config import WISE_ALPHA_UNVALIDATED, WISE_ALPHAS, FinetuneConfig, StopFlag, stopped
from clipapp.finetune.features import Inputs, TokenGrid
from clipapp.finetune.model_choice import score, wise_applied
from clipapp.finetune.trainable import PartialTower, head_of, model_inputs
from clipapp.progress import ProgressFn


@dataclass
class Run:
    history: dict[str, list]
    val_logits: list[np.ndarray]  # per evaluated epoch (index 0 = before training): (n_alphas, n_val, n_classes)
    val_scores: np.ndarray  # (epochs evaluated, n_alphas): the monitored value, for choosing across folds
    alphas: tuple[float, ...]
    best_epoch: int
    best_alpha: float
    stopped: bool
    state: dict[str, torch.Tensor]  # restored best (or last) weights, before WiSE


def epoch_steps(n_train: int, config: FinetuneConfig) -> int:
    return max(1, config.min_epoch_steps, math.ceil(n_train / config.batch_size))


def make_criterion(config: FinetuneConfig, counts: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss over probability-row targets (smoothing and mixing are already in the targets)."""
    from clipapp.tricks import ClassBalancedLoss, FocalLoss, class_balanced_weights

    if config.focal > 0:
        alpha = class_balanced_weights(counts, config.class_balanced) if config.class_balanced > 0 else None
        return FocalLoss(config.focal, alpha=alpha)
    if config.class_balanced > 0:
        return ClassBalancedLoss(counts, beta=config.class_balanced, loss_type="softmax")
    return nn.CrossEntropyLoss()


def make_optimizer(model: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the head (lr in logit units, no decay) and, in partial mode, the tuned blocks with layer-wise
    lr decay below the top one."""
    from clipapp.tricks import layerwise_lr_groups, make_sam

    head = head_of(model)
    groups: list[dict[str, Any]] = [
        {"params": [head.weight, head.bias], "lr": config.lr / head.logit_scale, "weight_decay": 0.0}
    ]
    if isinstance(model, PartialTower):
        # torch wants names in every group or none; the layer-wise groups carry them
        groups[0]["param_names"] = ["head.weight", "head.bias"]
        # ResNet towers decay by stage (layer1..4); nothing below the tuned blocks trains, so no embedding group
        block_regex = r"\.layer(\d+)\." if hasattr(model._visual, "attnpool") else r"\.resblocks\.(\d+)\."
        groups += layerwise_lr_groups(
            model._visual,
            config.visual_lr,
            config.layer_decay,
            block_regex=block_regex,
            embed_regex=r"^$",
            weight_decay=config.weight_decay,
        )
    for group in groups:
        group["base_lr"] = group["lr"]
    if config.sam > 0:
        return make_sam(groups, torch.optim.AdamW, rho=config.sam, lr=config.lr)
    # fused: one kernel per step for all tensors; torch's default on CPU loops over them, which was a fifth of
    # partial fine-tuning's time on the demo model (34 s -> 10 s of a 16-shot digits run)
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


def make_mixer(config: FinetuneConfig, n_classes: int, rng: np.random.Generator, *, spatial: bool):
    """Mixup, and CutMix where the inputs are spatial (pixels, ResNet maps, a ViT token grid); None when off."""
    from clipapp.tricks import MixupCutmix

    cutmix = config.cutmix if spatial else 0.0
    if config.mixup <= 0 and cutmix <= 0:
        return None
    return MixupCutmix(
        n_classes, mixup_alpha=config.mixup, cutmix_alpha=cutmix, smoothing=config.label_smoothing, rng=rng
    )


def predict(model: nn.Module, inputs: Inputs, batch_size: int = 256) -> torch.Tensor:
    """Logits for view 0 of every image, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = []
            for start in range(0, len(inputs), batch_size):
                x = inputs.plain(start, start + batch_size)
                out.append(model(model_inputs(model, x, inputs.pixel_space)))
            return torch.cat(out)
    finally:
        model.train(was_training)


class _Stepper:
    """One optimisation step on a batch: draw views, mix, forward, loss (+ anchor), backward, clip, step, EMA."""

    def __init__(
        self,
        model: nn.Module,
        inputs: Inputs,
        y: torch.Tensor,
        n_classes: int,
        config: FinetuneConfig,
        counts: np.ndarray,
        rng: np.random.Generator,
        grid: Optional[TokenGrid],
        ema,
    ):
        self.model, self.inputs, self.y, self.config, self.rng, self.ema = model, inputs, y, config, rng, ema
        self.n_classes, self.grid = n_classes, grid
        self.head = head_of(model)
        self.anchor_head = self.head.weight.detach().clone()  # the start: the zero-shot (or random) weights
        self.optimizer = make_optimizer(model, config)
        self.criterion = make_criterion(config, counts)
        # spatial: pixels, ResNet maps (N, C, H, W) or ViT tokens through the grid; never feature vectors
        spatial = isinstance(model, PartialTower) and (
            inputs.views is None or grid is not None or inputs.views.ndim >= 5
        )
        self.mixer = make_mixer(config, n_classes, rng, spatial=spatial)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from clipapp.tricks import soft_targets

        if self.mixer is None:
            return x, soft_targets(y, self.n_classes, smoothing=self.config.label_smoothing)
        grid = None if self.inputs.pixel_space else self.grid
        mixed = grid.mix(self.mixer, x, y) if grid is not None else self.mixer(x, y)
        return mixed.inputs, mixed.targets

    def __call__(self, batch: np.ndarray, lr_factor: float) -> tuple[float, int]:
        """Returns (loss, images whose logits' argmax matched the target's)."""
        from clipapp.tricks import clip_gradients, sam_step
        from clipapp.tricks.sam import SamOptimizer

        config, model = self.config, self.model
        x, soft = self.mix(self.inputs.draw(batch, self.rng), self.y[torch.as_tensor(batch)])
        x = model_inputs(model, x, self.inputs.pixel_space)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        first_logits: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            logits = model(x)
            loss = self.criterion(logits, soft)
            if config.anchor_weight > 0:
                loss = loss + config.anchor_weight * (self.head.weight - self.anchor_head).pow(2).sum(1).mean()
            loss.backward()
            if config.clip_grad > 0:
                clip_gradients(model.parameters(), config.clip_grad)
            if not first_logits:  # SAM calls this twice; the first pass is at the real weights
                first_logits.append(logits.detach())
            return loss

        optimizer = self.optimizer
        if isinstance(optimizer, SamOptimizer):  # make_optimizer made a SAM: config.sam > 0
            loss = sam_step(optimizer, closure, model=model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss = closure()
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(model)
        return float(loss.detach()), int((first_logits[0].argmax(1) == soft.argmax(1)).sum())


class _Validator:
    """After each epoch: the (EMA) weights at every WiSE blend on the held-out images; curves and early stopping."""

    def __init__(
        self,
        model: nn.Module,
        ema,
        train_inputs: Inputs,
        y_train: torch.Tensor,
        val_inputs: Inputs,
        y_val: torch.Tensor,
        config: FinetuneConfig,
        stage: str,
        on_epoch: Optional[Callable[[dict], None]],
    ):
        from clipapp.tricks import EarlyStopping

        self.model, self.ema, self.config, self.stage, self.on_epoch = model, ema, config, stage, on_epoch
        self.train_inputs, self.y_train, self.val_inputs, self.y_val = train_inputs, y_train, val_inputs, y_val
        self.anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.alphas = WISE_ALPHAS if config.wise_alpha is None else (config.wise_alpha,)
        self.stopper = EarlyStopping(config.patience, mode="min")  # on `score`: lower is better
        self.history: dict[str, list] = {
            "epoch": [],
            "train_loss": [],
            "train_acc": [],
            "val_loss": [],
            "val_acc": [],
            "wise_alpha": [],
        }
        self.val_logits: list[np.ndarray] = []
        self.val_scores: list[list[float]] = []
        self._start_logits: Optional[torch.Tensor] = None  # alpha 0 is the start at every epoch: predicted once

    @property
    def evaluated(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model  # the EMA copy is evaluated in place

    def _blend_logits(self, alpha: float) -> torch.Tensor:
        if alpha == 0.0 and self._start_logits is not None:
            return self._start_logits
        with wise_applied(self.evaluated, self.anchor, alpha) as blended:
            logits = predict(blended, self.val_inputs)
        if alpha == 0.0:
            self._start_logits = logits
        return logits

    def __call__(self, epoch: int, train_loss: Optional[float], train_acc: Optional[float]) -> bool:
        """Record one epoch (the WiSE blend that scores best on held-out data); True when early stopping says so."""
        if train_loss is None and len(self.train_inputs):
            logits = predict(self.evaluated, self.train_inputs)
            train_loss = float(F.cross_entropy(logits, self.y_train))
            train_acc = float((logits.argmax(1) == self.y_train).float().mean())
        should_stop = False
        val_loss = val_acc = alpha = None
        if len(self.val_inputs):
            per_alpha, scores = [], []
            for a in self.alphas:
                logits = self._blend_logits(a)
                loss = float(F.cross_entropy(logits, self.y_val))
                acc = float((logits.argmax(1) == self.y_val).float().mean())
                per_alpha.append((logits.numpy(), loss, acc))
                scores.append(score(self.config.monitor, loss, acc))
            if epoch == 0 and self.config.head_init == "random":
                scores = [math.inf] * len(self.alphas)  # an untrained random head is no candidate: any epoch beats it
            pick = int(np.argmin(scores))  # ties go to the smaller alpha: closer to zero-shot
            self.val_logits.append(np.stack([logits for logits, _, _ in per_alpha]))
            self.val_scores.append(scores)
            _, val_loss, val_acc = per_alpha[pick]
            alpha = self.alphas[pick]
            should_stop = self.stopper.step(scores[pick], self.evaluated)
        for key, value in zip(self.history, (epoch, train_loss, train_acc, val_loss, val_acc, alpha), strict=True):
            self.history[key].append(value)
        if self.on_epoch:
            self.on_epoch({"stage": self.stage, **{k: list(v) for k, v in self.history.items()}})
        return should_stop


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        order = rng.permutation(n)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def train_run(
    *,
    build_model: Callable[[], nn.Module],
    inputs: Inputs,
    targets: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    n_classes: int,
    config: FinetuneConfig,
    epochs: int,
    early_stop: bool,
    seed: int,
    grid: Optional[TokenGrid] = None,
    steps_per_epoch: Optional[int] = None,
    on_epoch: Optional[Callable[[dict], None]] = None,
    progress: Optional[ProgressFn] = None,
    stop: StopFlag = None,
    stage: str = "",
) -> Run:
    """Train one model on `train_idx`, evaluating the WiSE-blended weights on `val_idx` after every epoch."""
    from clipapp.tricks import WeightEma

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model()
    ema = WeightEma(model, decay=config.ema) if config.ema > 0 else None
    y_all = torch.as_tensor(targets, dtype=torch.long)
    train_inputs, y_train = inputs.take(train_idx), y_all[train_idx]
    step = _Stepper(
        model,
        train_inputs,
        y_train,
        n_classes,
        config,
        np.bincount(targets[train_idx], minlength=n_classes),
        rng,
        grid,
        ema,
    )
    validate = _Validator(
        model, ema, train_inputs, y_train, inputs.take(val_idx), y_all[val_idx], config, stage, on_epoch
    )
    # An epoch is a pass over the training images, unless the caller fixes the steps (the refit on all images
    # replays the validation runs' schedule: same updates, same learning rates, batches drawn from more images).
    steps_per_epoch = steps_per_epoch or epoch_steps(len(train_idx), config)
    assert config.epochs is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    total_steps = max(1, config.epochs * steps_per_epoch)  # the schedule of a full run, also when stopping early

    validate(0, None, None)
    if not len(train_idx):
        epochs = 0  # a fold that holds out everything: only the zero-shot point
    done, was_stopped = 0, False
    model.train()
    stream = _batches(len(train_idx), config.batch_size, rng)
    for epoch in range(1, epochs + 1):
        losses, correct, seen = [], 0, 0
        for _ in range(steps_per_epoch):
            if stopped(stop):
                was_stopped = True
                break
            batch = next(stream)
            loss, right = step(batch, 0.5 * (1.0 + math.cos(math.pi * min(done, total_steps) / total_steps)))
            done += 1
            losses.append(loss)
            correct += right
            seen += len(batch)
        if was_stopped and not losses:
            break
        if progress:
            progress(epoch, epochs, f"{stage}epoch {epoch}/{epochs}, loss {np.mean(losses):.3f}")
        if (validate(epoch, float(np.mean(losses)), correct / max(1, seen)) and early_stop) or was_stopped:
            break
    return _finish(model, ema, validate, len(val_idx) > 0, config, was_stopped)


def _finish(
    model: nn.Module, ema, validate: _Validator, validated: bool, config: FinetuneConfig, was_stopped: bool
) -> Run:
    """The best epoch's (EMA) weights when something was held out, else the last ones."""
    history, stopper = validate.history, validate.stopper
    if validated and stopper.best_state is not None and stopper.best_step is not None:  # set together
        best_epoch = stopper.best_step
        best_alpha = history["wise_alpha"][best_epoch]
        stopper.restore(model)
    else:
        best_epoch = len(history["epoch"]) - 1
        best_alpha = WISE_ALPHA_UNVALIDATED if config.wise_alpha is None else config.wise_alpha
        if ema is not None:
            model.load_state_dict(ema.module.state_dict())
    scores = np.asarray(validate.val_scores, dtype=np.float64).reshape(-1, len(validate.alphas))
    return Run(
        history,
        validate.val_logits,
        scores,
        validate.alphas,
        best_epoch,
        best_alpha,
        was_stopped,
        {k: v.detach().clone() for k, v in model.state_dict().items()},
    )


# ------------------------------------------------------------------------------------------------ CPU threads
# a pass this slow is long beside the machine's jitter: once this much is spent, one timed pass after the warm-up
# decides (ViT-B-32, 2 tuned blocks: ~0.5 s a pass, so the planner's timing of a depth is ~2.5 s shorter)
ENOUGH_TIMING_S = 1.0


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (process-wide: torch has no per-thread setting)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def fastest_threads(
    model: nn.Module, inputs: Inputs, device: torch.device, *, batch_size: int, repeats: int = 3
) -> int:
    """The faster thread count, 1 or torch's current one, for forward + backward passes of `model` on a batch.

    Few-shot batches are small: on a 2-core CPU shared with other work, one thread did a partial fine-tuning step
    of the demo model in 15-20 ms against 103-128 ms for two (13-27 ms with OMP_WAIT_POLICY=PASSIVE: OpenMP's
    threads spin waiting on each other), and the head mode's 16-shot digits run took 5.5 s instead of 10.1 s. A
    bigger model or an idle machine can favour more threads, so both are timed rather than assumed. Gradients are
    cleared afterwards; weights are not touched.
    """
    current = torch.get_num_threads()
    if device.type != "cpu" or current <= 1:
        return current
    x = inputs.plain(0, batch_size)
    timings = {}
    for n in (1, current):
        with torch_threads(n):
            best, spent = math.inf, 0.0
            for i in range(repeats + 1):  # the first pass warms up
                started = time.perf_counter()
                model(model_inputs(model, x, inputs.pixel_space)).float().sum().backward()
                took = time.perf_counter() - started
                best, spent = min(best, took), spent + took
                if i >= 1 and spent > ENOUGH_TIMING_S:
                    break
            timings[n] = best
    model.zero_grad(set_to_none=True)
    return min(timings, key=timings.__getitem__)


# ------------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class StepTiming:
    """Seconds of the pieces of a run, timed on one batch (clipapp/finetune/measure.py, for the planner)."""

    step: float  # one training step, as train_run makes it (`_Stepper`: mixing, loss, backward, optimiser, EMA)
    forward_per_image: float  # validation: one image through the model, no gradients
    per_run: float  # a run's EMA copy of the model


def time_steps(
    model: nn.Module,
    inputs: Inputs,
    n_classes: int,
    config: FinetuneConfig,
    *,
    grid: Optional[TokenGrid] = None,
    repeats: int = 2,
) -> StepTiming:
    """Time `repeats` training steps (after one that warms up) of `model` on the first batch of `inputs`, and its
    validation forward on all of them. The steps are real: `model`'s weights change, so pass a throwaway one."""
    from clipapp.tricks import WeightEma

    rng = np.random.default_rng(0)
    y = torch.arange(len(inputs)) % n_classes
    started = time.perf_counter()
    ema = WeightEma(model, decay=config.ema) if config.ema > 0 else None
    per_run = time.perf_counter() - started
    counts = np.bincount(y.numpy(), minlength=n_classes)
    step = _Stepper(model, inputs, y, n_classes, config, counts, rng, grid, ema)
    batch = np.arange(min(len(inputs), config.batch_size))
    model.train()
    step(batch, 1.0)  # the first step allocates the optimiser's state and warms the kernels
    started = time.perf_counter()
    for _ in range(repeats):
        step(batch, 1.0)
    step_s = (time.perf_counter() - started) / max(1, repeats)  # the mean: the minimum flatters a busy machine
    started = time.perf_counter()
    predict(model, inputs)
    return StepTiming(step_s, (time.perf_counter() - started) / max(1, len(inputs)), per_run)
