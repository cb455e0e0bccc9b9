"""Every setting of a fine-tune, in one place: `FinetuneConfig`, the modes and the grids model_choice tries.

Each field carries its description as data (`Setting` in the field's metadata, the open_clip / Hugging Face
`field(metadata=...)` manner): help, choices, the CLI flag, the web page's control. The `finetune` command's flags
(clipapp/app/cli/arguments.py) and the Fine-tune tab's controls (clipapp/app/ui/finetune_settings.py) are generated
from it, so a setting, its default and its help are written once (docs/architecture.md, "Command line"). No torch
and no Gradio here: the CLI's parser imports this module for `--help`.

The defaults are chosen from measurements on bench/bench_fewshot.py (docs/benchmarks.md, "Few-shot").
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from clipapp._compat import forward_getattr
from clipapp.errors import ClipAppError
from clipapp.model.prompts import DEFAULT_TEMPLATES, resolve_templates
from clipapp.progress import StopFlag, stopped  # noqa: F401 - re-exported: the training code imports them from here

MODES = ("head", "cache", "partial")  # also the modes an adapter file may name (clipapp.finetune.adapter)
MONITORS = ("val_loss", "val_acc")
HEAD_INITS = ("zero-shot", "random")
# where partial fine-tuning mixes: on the activations cached at the block boundary (manifold mixup; CutMix on the
# spatial maps or the ViT token grid), or on the pixels (the frozen lower blocks then run again at every step)
MIX_SPACES = ("activations", "pixels")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # clipapp/model/device.py's training_dtype decides what auto means

WISE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the blends tried when wise_alpha is None (0 = keep zero-shot)
WISE_ALPHA_UNVALIDATED = 0.5  # nothing held out to choose on: the middle, robust in the WiSE-FT paper
CACHE_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)
CACHE_BETAS = (1.0, 3.0, 5.5, 8.0, 12.0)
# The schedule a mode gets when `epochs`, `max_folds` or `views` is left at None, measured on bench_fewshot
# (digits, seed 0): the head needs its 80 epochs (4 shots: 57.8% at 80 epochs x 5 folds, 50.0% at 20 x 3), while
# partial fine-tuning, each step running two tower blocks, gets 30 epochs x 3 folds at a higher visual lr. Digits,
# 3 seeds, 20 epochs: 66.0 / 84.4 (4 / 16 shots) with 4 augmented views, 69.6 / 84.7 with 1, so views stay off;
# at 20 epochs the chosen epoch was the last one (seed 0, 16 shots: 87.6% at 20 epochs, 88.4% at 30).
# Cross-validated through the CLI's path (bench/bench_settings_cv.py: digits, Fashion-MNIST in 4 coarse classes and
# skimage photo crops, 4 and 16 shots, 3 splits each): partial 2 blocks x 30 epochs is the strongest on every
# dataset; 15 epochs cost up to 5.8 points, 1 block up to 3.6 (docs/benchmarks.md, "Choosing the fine-tune
# settings").
MODE_DEFAULTS: dict[str, dict[str, int]] = {
    "head": {"epochs": 80, "max_folds": 5, "views": 1},
    "cache": {"epochs": 80, "max_folds": 5, "views": 1},
    "partial": {"epochs": 30, "max_folds": 3, "views": 1},
}


@dataclass(frozen=True)
class Candidate:
    """One schedule the planner (clipapp/finetune/plan.py) may choose: what to train and for how long."""

    mode: str
    blocks: int = 0  # partial mode: the last visual blocks tuned (0 elsewhere: nothing of the tower trains)
    epochs: int = 0  # at most; 0 for the cache, which does not train
    max_folds: int = 2

    def label(self) -> str:
        """ "partial, last 2 blocks, 30 epochs x 3 folds": what the page and the CLI say before training."""
        if self.mode == "cache":
            return "cache adapter (no training)"
        what = "head" if self.mode == "head" else f"head + last {self.blocks} block{'s' if self.blocks != 1 else ''}"
        return f"{what}, {self.epochs} epochs x {self.max_folds} folds"


# The planner's candidates in STRENGTH ORDER, strongest first: it takes the first whose estimated time fits the
# budget (the cheapest when none does), so this tuple is the one place where "which schedule is better" lives.
# The order is cross-validated (bench/bench_settings_cv.py through the CLI's own path, demo model, top-1 mean over
# 3 tuning splits of digits / Fashion-MNIST in 4 coarse classes / skimage photo crops; docs/benchmarks.md, "Choosing
# the fine-tune settings"), and held on a held-out split run once after the order was written (41 of 42 pairs):
#  * partial 2 blocks x 30: the strongest on every dataset (16 shots: 85.3 / 93.0 / 75.7; held out 86.4 / 88.2 / 78.0)
#  * partial 1 block x 30 (83.3 / 92.9 / 72.5) and 2 blocks x 15 (79.5 / 93.0 / 71.3): tied on average over both shot
#    counts (77.9 against 77.6), so the cheaper first (digits: 9.6 s against 12.9 s)
#  * partial 1 block x 15 (76.6 / 92.9 / 70.7), then the head, 80 x 5 (75.4 / 93.4 / 65.7)
#  * the head at 30 x 3: not cross-validated, the cheapest trained fallback (4-shot digits in bench_fewshot: 50.0%
#    against 57.8% at 80 x 5)
#  * the cache last: the weakest wherever the zero-shot prior is wrong (16 shots: 50.2 / 93.5 / 48.9), and the cheapest
#  * not here: partial 1 block x 10 or 6 epochs x 2 folds, cheap enough for ViT-B-32's 60 s, fell below the head
#    (mean of 6 groups 69.2 / 65.5 against 71.5), so a short budget trains the head
# The first candidate is also what a setting left automatic means without the planner (FinetuneConfig's
# __post_init__), so it must stay the mode's MODE_DEFAULTS schedule (a unit test checks it).
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("partial", blocks=2, epochs=30, max_folds=3),
    Candidate("partial", blocks=1, epochs=30, max_folds=3),
    Candidate("partial", blocks=2, epochs=15, max_folds=3),
    Candidate("partial", blocks=1, epochs=15, max_folds=3),
    Candidate("head", epochs=80, max_folds=5),
    Candidate("head", epochs=30, max_folds=3),
    Candidate("cache", max_folds=5),
)
# The settings a candidate fills when the user left them automatic (None); one the user set wins (plan.py).
PLANNED = ("mode", "blocks", "epochs", "max_folds")
# The default time budget of a fine-tune, by the kind of device clipapp/model/device.py chose. A CPU user waits for
# the button: in 60 s, at 16 shots x 10 classes of digits (bench/bench_budget.py), the demo model runs the strongest
# schedule (13 s) and ViT-B-32 the head (15 s; its cheapest partial schedule is estimated at ~105 s), where the
# previous default took 557 s. A GPU runs the strongest candidate on that set within seconds, so its budget only
# guards against big sets.
DEFAULT_BUDGET_S = {"cpu": 60.0, "cuda": 300.0}
NO_BUDGET = "none"  # --budget none: the strongest candidate, however long it takes


SETTING = "setting"  # the key of a field's `Setting` in its dataclass metadata
CROSS_ENTROPY = "cross-entropy"
# The losses one picks by name (the Fine-tune page's Loss choice): each is a trick that is off at 0 and is turned on
# at its `Setting.example`; cross-entropy is all of them off. The CLI sets the numbers themselves and may combine
# them (focal loss with class-balanced weights).
NAMED_LOSSES = ("focal", "class_balanced")


@dataclass(frozen=True)
class Control:
    """How the Fine-tune page shows a setting; clipapp/app/ui/finetune_tab.py turns it into a Gradio component."""

    kind: str  # slider | number | radio (of the setting's choices) | dropdown (of `options` and "auto")
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 1.0
    options: tuple[float, ...] = ()  # a dropdown's values besides "auto" (any other number may be typed)
    words: tuple[str, ...] = ()  # a dropdown's values in words, after "auto" (the budget's "none")


@dataclass(frozen=True)
class Setting:
    """A `FinetuneConfig` field's metadata: what `clipapp finetune --help` and the Fine-tune page say about it."""

    help: str
    choices: tuple[str, ...] = ()  # the values allowed (`FinetuneConfig.validate` checks them)
    choice_help: tuple[str, ...] = ()  # one phrase per choice
    flag: str = ""  # the CLI flag when it is not the field's name with dashes
    metavar: str = ""  # the CLI's name for the value when not its type's (N, X, TEXT)
    label: str = ""  # the page's short label (default: the help)
    auto: str = ""  # what the default None means; the mode-dependent fields say MODE_DEFAULTS
    example: Optional[float] = None  # a trick off at 0: the value that typically turns it on (help's "e.g.")
    control: Optional[Control] = None  # shown on the Fine-tune page


def _setting(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={SETTING: Setting(help=help, **meta)})


def _listed(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tune, as plain data (`to_dict` / `from_dict` round-trip through JSON).

    A trick is off at 0 (mixup, cutmix, label_smoothing, ema, sam, focal, class_balanced, clip_grad).
    """

    mode: Optional[str] = _setting(
        None,
        "what to train",
        auto="the strongest that fits the budget",
        choices=MODES,
        choice_help=(
            "a linear head from the zero-shot weights (fast)",
            "a training-free cache adapter, Tip-Adapter style",
            "the last visual blocks and the head (slow on a CPU)",
        ),
        label="What to train",
        control=Control("radio"),
    )
    # A setting, like every other, so the CLI flag, the page's control and the API parameter come from here. Kept as
    # the text the user gave ("90", "5m", "none"); None is the device's default, `budget_seconds` resolves both.
    budget: Optional[str] = _setting(
        None,
        "time budget of the whole fine-tune, in seconds (or 90s, 5m) or 'none': before training, a few timed steps "
        "on this model and hardware estimate each candidate schedule and the strongest that fits runs; settings "
        "you give (mode, blocks, epochs, max folds) are kept, the planner only fills those left automatic; "
        "'none' = the strongest, however long",
        auto=f"{DEFAULT_BUDGET_S['cpu']:g} s on a CPU, {DEFAULT_BUDGET_S['cuda']:g} s on a GPU",
        label="Time budget, seconds (auto = 60 on a CPU, 300 on a GPU; none = no limit)",
        metavar="SECONDS|none",
        control=Control("dropdown", options=(30, 60, 120, 300, 600), words=(NO_BUDGET,)),
    )
    head_init: str = _setting(
        "zero-shot",
        "the head's start",
        choices=HEAD_INITS,
        choice_help=("the class prompts' text embeddings", "a plain linear probe, for comparison only"),
    )
    templates: str | list[str] = _setting(
        DEFAULT_TEMPLATES, "prompt templates for the zero-shot start: simple, openai, none, or one template with {}"
    )
    epochs: Optional[int] = _setting(
        None,
        "at most this many epochs; early stopping picks the best",
        label="Epochs (max; early stopping; auto = the planner's, within the budget)",
        control=Control("dropdown", options=(10, 20, 30, 50, 80, 120)),
    )
    # in logit units: the weights move by lr / logit_scale, so a model with a sharp temperature (CLIP's 100) and one
    # with a soft one (the demo model's 12) see the same change in logits per step. EMA, WiSE, early stopping and the
    # sign test keep it in check
    lr: float = _setting(0.6, "learning rate of the head in logit units (AdamW, cosine schedule over the epochs)")
    batch_size: int = _setting(16, "images per training step")
    # with 4 images per class a pass is 2 steps, too few updates over `epochs` (digits, 4 shots, 6 seeds: 48.7% ->
    # 51.7% top-1 in bench_fewshot)
    min_epoch_steps: int = _setting(5, "an epoch is a pass over the training images, but at least this many steps")
    # Off by default: with the held-out choice of the WiSE blend and the zero-shot fallback it measured no better
    # (bench_fewshot), and it hurts where the zero-shot prior is wrong (classes the model has never seen)
    anchor_weight: float = _setting(0.0, "L2 pull of the head towards the zero-shot weights (L2-SP); 0 = off")
    wise_alpha: Optional[float] = _setting(
        None,
        "WiSE-FT blend: 0 = the zero-shot weights, 1 = the fine-tuned ones",
        auto=f"the best of {_listed(WISE_ALPHAS)} on the held-out images",
        label="WiSE-FT alpha (0 = zero-shot weights, 1 = fine-tuned; auto = best on held-out images)",
        control=Control("dropdown", options=WISE_ALPHAS),
    )
    # partial fine-tuning of the visual tower
    blocks: Optional[int] = _setting(
        None,
        "partial mode: how many of the last visual blocks to tune",
        auto="the planner's, within the budget",
        label="Visual blocks (partial mode; auto = the planner's, within the budget)",
        control=Control("dropdown", options=(1, 2, 3, 4, 6)),
    )
    visual_lr: float = _setting(
        5e-4, "partial mode: learning rate of the top tuned block; lower ones decay by layer_decay per block"
    )
    layer_decay: float = _setting(0.75, "partial mode: learning-rate factor from one tuned block to the one below")
    weight_decay: float = _setting(0.05, "partial mode: AdamW decay of the tuned visual matrices (never of the head)")
    mix_space: str = _setting(
        "activations",
        "partial mode: where mixup and CutMix mix",
        choices=MIX_SPACES,
        choice_help=("the cached activations (the frozen part runs once per view)", "the frozen blocks run every step"),
    )
    # bf16 makes a ViT-B-32 step 1.6x faster on a CPU with native bf16, at no measured cost in accuracy
    # (bench_partial_step.py; bench_settings_cv.py's -fp32 candidates; docs/benchmarks.md, "Speeding the partial step")
    train_precision: str = _setting(
        "auto",
        "partial mode: the dtype the tuned blocks compute in (autocast; weights, optimiser and head stay fp32)",
        choices=TRAIN_PRECISIONS,
        choice_help=("bf16 where the CPU or GPU has it natively, else fp32", "float32", "bfloat16"),
    )
    views: Optional[int] = _setting(
        None,
        "augmented views per image whose frozen-part outputs are cached (view 0 is the image itself); training "
        "draws one per image and step; 1 = no augmentation",
    )
    # tricks (the first three are on by default: measured better than without in bench/bench_fewshot.py)
    mixup: float = _setting(
        0.2,
        "mixup alpha, Beta(alpha, alpha): on features in head mode, on cached activations (or pixels) in partial "
        "mode; 0 = off",
        label="Mixup alpha (0 = off)",
        control=Control("slider", 0, 1, 0.05),
    )
    cutmix: float = _setting(
        0.0, "partial mode: CutMix alpha, boxes of the cached spatial maps / token grid (or of the pixels); 0 = off"
    )
    label_smoothing: float = _setting(
        0.1, "label smoothing; 0 = off", label="Label smoothing", control=Control("slider", 0, 0.3, 0.01)
    )
    ema: float = _setting(
        0.99,
        "weight EMA decay; 0 = off",
        label="Weight EMA decay (0 = off)",
        control=Control("slider", 0, 0.999, 0.001),
    )
    sam: float = _setting(
        0.0, "SAM rho; 0 = off", example=0.05, label="SAM rho (0 = off)", control=Control("slider", 0, 0.2, 0.01)
    )
    focal: float = _setting(0.0, "focal loss gamma (hard examples); 0 = cross-entropy", example=2.0)
    class_balanced: float = _setting(
        0.0,
        "class-balanced loss beta: weights classes by their effective number of images (imbalanced classes); 0 = off",
        example=0.999,
    )
    clip_grad: float = _setting(0.0, "max gradient norm; 0 = off")
    # validation and early stopping
    patience: int = _setting(8, "early-stopping patience in epochs")
    monitor: str = _setting("val_loss", "what early stopping watches", choices=MONITORS)
    val_per_class: int = _setting(
        0,
        "held-out images per class; 0 = val_fraction of each class (at least 1), and k-fold while a class has fewer "
        "than kfold_below images",
        flag="shots-val",
    )
    val_fraction: float = _setting(0.25, "held-out share of each class when val_per_class is 0")
    # k-fold: every image is held out once, so the epoch count and the WiSE blend are chosen on all of them instead of
    # on a noisy handful (cheap for the head; each fold is a run)
    kfold_below: int = _setting(20, "k-fold while a class has fewer images than this")
    max_folds: Optional[int] = _setting(None, "at most this many folds")
    refit: bool = _setting(True, "after a held-out split, train again on every image for the chosen epoch count")
    # the same images chose the epoch and the WiSE blend, so one or two more right is noise; a model that has learnt
    # something wins by a clear margin
    require_gain: bool = _setting(
        True,
        "keep the zero-shot classifier unless the adapted one is better on the held-out images by a one-sided sign "
        "test at gain_p_value (over the images exactly one of the two gets right)",
    )
    gain_p_value: float = _setting(0.05, "the sign test's p-value")
    cache_alpha: Optional[float] = _setting(
        None,
        "cache mode: weight of the cache's logits",
        auto=f"the best of {_listed(CACHE_ALPHAS)} on the held-out images",
    )
    cache_beta: Optional[float] = _setting(
        None,
        "cache mode: sharpness of the cache's affinities",
        auto=f"the best of {_listed(CACHE_BETAS)} on the held-out images",
    )
    seed: int = _setting(0, "random seed", label="Seed", control=Control("number"))
    max_images: int = _setting(5000, "at most this many labelled images")

    # The PLANNED settings that were left automatic (None) when the config was made: the planner may set them. Not a
    # field: it is not a setting, and `dataclasses.replace` (a concrete config) starts it afresh.
    _automatic = frozenset[str]()

    def __post_init__(self) -> None:
        self._automatic = frozenset(name for name in PLANNED if getattr(self, name) is None)
        # Left automatic, a setting holds the strongest candidate's value (what runs without a budget); the
        # planner replaces it with the schedule that fits (clipapp/finetune/plan.py).
        if self.mode is None:
            self.mode = CANDIDATES[0].mode
        if self.blocks is None:
            self.blocks = next(c.blocks for c in CANDIDATES if c.mode == "partial")
        for name, value in MODE_DEFAULTS.get(self.mode, MODE_DEFAULTS["head"]).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def automatic(self) -> frozenset[str]:
        """The settings among PLANNED that the user left automatic: the planner fills these and no other."""
        return self._automatic

    def budget_seconds(self, device_type: str) -> Optional[float]:
        """The budget in seconds; None when there is none ('none'). Left automatic: DEFAULT_BUDGET_S of the device
        kind ("cpu", "cuda"; any other accelerator is counted as a GPU)."""
        if self.budget is None:
            return DEFAULT_BUDGET_S.get(device_type, DEFAULT_BUDGET_S["cuda"])
        if self.budget.strip().lower() == NO_BUDGET:
            return None
        from clipapp.units import parse_duration

        try:
            return parse_duration(self.budget)
        except ClipAppError:
            raise ClipAppError(
                f"Fine-tune setting: budget must be seconds (e.g. 60, 90s, 5m) or {NO_BUDGET}, got {self.budget!r}."
            ) from None

    def validate(self) -> "FinetuneConfig":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ClipAppError(f"Fine-tune setting: {message}")

        for spec in settings().values():
            choices, value = spec.setting.choices, getattr(self, spec.name)
            need(not choices or value in choices, f"{spec.name} must be one of {', '.join(choices)}, got {value!r}.")
        need(self.views is not None and 1 <= self.views <= 32, f"views must be between 1 and 32, got {self.views}.")
        need(
            self.epochs is not None and 0 <= self.epochs <= 1000,
            f"epochs must be between 0 and 1000, got {self.epochs}.",
        )
        need(self.lr > 0 and self.visual_lr > 0, "learning rates must be positive.")
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}.")
        need(self.min_epoch_steps >= 1, f"min_epoch_steps must be at least 1, got {self.min_epoch_steps}.")
        need(
            self.wise_alpha is None or 0.0 <= self.wise_alpha <= 1.0,
            f"WiSE alpha must be between 0 and 1 (or None: chosen on held-out data), got {self.wise_alpha}.",
        )
        need(self.blocks is not None and self.blocks >= 1, f"blocks must be at least 1, got {self.blocks}.")
        self.budget_seconds("cpu")  # raises on a budget that is neither seconds nor none
        need(0.0 < self.layer_decay <= 1.0, f"layer decay must be in (0, 1], got {self.layer_decay}.")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0.")
        need(0.0 <= self.label_smoothing < 1.0, f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        need(0.0 <= self.ema < 1.0, f"EMA decay must be in [0, 1), e.g. 0.99; got {self.ema}.")
        need(self.sam >= 0 and self.focal >= 0 and self.clip_grad >= 0, "sam, focal and clip_grad must be >= 0.")
        need(
            0.0 <= self.class_balanced < 1.0,
            f"class-balanced beta must be in [0, 1), e.g. 0.999; got {self.class_balanced}.",
        )
        need(self.anchor_weight >= 0 and self.weight_decay >= 0, "anchor_weight and weight_decay must be >= 0.")
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}.")
        need(self.val_per_class >= 0, f"val_per_class must be >= 0, got {self.val_per_class}.")
        need(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        need(
            self.kfold_below >= 2 and self.max_folds is not None and self.max_folds >= 2,
            "kfold_below and max_folds must be at least 2.",
        )
        need(self.max_images >= 2, "max_images must be at least 2.")
        need(0.0 < self.gain_p_value <= 1.0, f"gain_p_value must be in (0, 1], got {self.gain_p_value}.")
        resolve_templates(self.templates)  # raises on a template without {}
        return self

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not isinstance(data["templates"], str):
            data["templates"] = list(data["templates"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinetuneConfig":
        _check_known(data)
        return cls(**data).validate()

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> "FinetuneConfig":
        """Settings as the CLI parses them or the page sends them (a slider's 3.0 for an int, "auto" for None) ->
        a validated config; a setting not given keeps its default."""
        known = _check_known(values)
        return cls(**{name: known[name].parse(value) for name, value in values.items()}).validate()


def _check_known(values: Mapping[str, Any]) -> dict[str, SettingField]:
    """Every field has a `Setting`, so the settings are the names a config (a file's or a caller's) may hold."""
    known = settings()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ClipAppError(f"Unknown fine-tune setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))}).")
    return known


@dataclass(frozen=True)
class SettingField:
    """One `FinetuneConfig` field with its `Setting`, its default and its value type resolved."""

    name: str
    default: Any  # the dataclass default; None = automatic (`Setting.auto`, or the mode's MODE_DEFAULTS)
    type: type  # bool, int, float or str
    optional: bool  # None (automatic) is a value
    setting: Setting

    @property
    def flag(self) -> str:
        return "--" + (self.setting.flag or self.name.replace("_", "-"))

    @property
    def mode_dependent(self) -> bool:
        """Left at None, the setting is the chosen mode's own (MODE_DEFAULTS: epochs, views, max_folds)."""
        return self.default is None and any(self.name in defaults for defaults in MODE_DEFAULTS.values())

    def default_text(self) -> str:
        if self.default is None:
            if self.mode_dependent:
                return "the mode's: " + ", ".join(f"{mode} {d[self.name]}" for mode, d in MODE_DEFAULTS.items())
            return self.setting.auto
        if isinstance(self.default, bool):
            return "yes" if self.default else "no"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def describe(self) -> str:
        """The help, with the choices, a typical value and the default: `finetune --help` and the page's info."""
        text = self.setting.help
        if self.setting.choice_help:
            text += (
                " ("
                + "; ".join(f"{c}: {h}" for c, h in zip(self.setting.choices, self.setting.choice_help, strict=True))
                + ")"
            )
        if self.setting.example is not None:
            text += f", e.g. {self.setting.example:g}"
        return f"{text} (default: {self.default_text()})"

    def parse(self, value: Any) -> Any:
        """A value typed or sent for this setting -> its type: None (or "" / "auto" where None is a value) is the
        default; "3" and 3.0 are the int 3. Raises ClipAppError naming the setting."""
        if isinstance(value, str):
            value = value.strip()
            if value.lower() in ("", "auto"):
                value = None
        if value is None:
            return None if self.optional else self.default
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.lower() not in _BOOLEANS:
                        raise ValueError(value)
                    return _BOOLEANS[value.lower()]
                return bool(value)
            if self.type is int:
                number = float(value)
                if not number.is_integer():
                    raise ValueError(value)
                return int(number)
            return self.type(value)
        except (TypeError, ValueError):
            wanted = {bool: "yes or no", int: "a whole number", float: "a number"}.get(self.type, "a text")
            also = " (or auto)" if self.optional else ""
            raise ClipAppError(f"Fine-tune setting {self.name}: expected {wanted}{also}, got {value!r}.") from None


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@functools.cache
def settings() -> dict[str, SettingField]:
    """Every field of `FinetuneConfig` that has a `Setting`, in the dataclass's order, by name."""
    hints = typing.get_type_hints(FinetuneConfig)
    found = {}
    for f in dataclasses.fields(FinetuneConfig):
        if SETTING not in f.metadata:
            continue
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        kind = next(a for a in args if a in (bool, int, float, str))
        found[f.name] = SettingField(f.name, f.default, kind, type(None) in args, f.metadata[SETTING])
    return found


def loss_names() -> tuple[str, ...]:
    """The losses one picks by name: cross-entropy, then each of NAMED_LOSSES as its flag says it (focal, ...)."""
    return (CROSS_ENTROPY, *(settings()[name].flag.removeprefix("--") for name in NAMED_LOSSES))


def loss_settings(loss: str) -> dict[str, float]:
    """A loss by name -> the settings that make it: its own at its `Setting.example`, the other NAMED_LOSSES off."""
    names = loss_names()
    if loss not in names:
        raise ClipAppError(f"Loss must be one of {', '.join(names)}, got {loss!r}.")
    chosen = dict(zip(names[1:], NAMED_LOSSES, strict=True)).get(loss)
    return {name: float(settings()[name].setting.example or 0.0) if name == chosen else 0.0 for name in NAMED_LOSSES}


def loss_name(config: FinetuneConfig) -> str:
    """The named loss a config's numbers make (the first one on), cross-entropy when none is."""
    on = [name for name, value in zip(loss_names()[1:], NAMED_LOSSES, strict=True) if getattr(config, value) > 0]
    return on[0] if on else CROSS_ENTROPY


# ProgressFn lived here before 0.2 as (fraction, message); fine-tuning now reports through clipapp.progress's
# (done, total, message). The old name is kept for one release: _compat.MOVED_NAMES.
__getattr__ = forward_getattr(__name__, ())
