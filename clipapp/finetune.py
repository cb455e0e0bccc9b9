"""Few-shot adaptation ("Fine-tune"): a handful of labelled images per class -> an `Adapter` that beats zero-shot.

Three modes, all starting from the zero-shot classifier so that zero training steps *is* zero-shot:
  head     (default) a linear head initialised from the zero-shot text embeddings of the class prompts, trained on
           image features encoded once (seconds on a CPU); logits = logit_scale * normalize(f) @ W.T + b, with
           W = the unit text embeddings and b = 0 at the start. Initialising from zero-shot (not at random) is what
           keeps few shots from falling below zero-shot. The rows of W are free to grow: a cosine head is capped at
           logit differences of 2 * logit_scale, too soft where the model's scale is small (the demo model's is 12)
           or its embeddings of a new domain all lie close together.
  cache    training-free cache adapter in the Tip-Adapter spirit: keys = support features, values = one-hot labels,
           logits = zero-shot + alpha * exp(-beta (1 - f @ keys.T)) @ values; alpha and beta picked on held-out data.
  partial  the head plus the last N blocks of the visual tower (ViT or ModifiedResNet), trained on a deep copy (the
           resident model is never touched) with layer-wise lr decay; the frozen lower blocks run once per image
           and are cached, unless mixup/CutMix need the pixels.
Weight-space ensembling (WiSE-FT) blends the tuned weights with the zero-shot ones, W = (1-a) W_zs + a W_ft, with
`a` fixed or chosen on held-out data. A stratified held-out split (k-fold while a class has fewer than
`kfold_below` images) drives early stopping, the choice of `a` and the before/after report; the adapter is then
refit on every image for the chosen epoch count, and kept only if it beat zero-shot on the held-out images by a
sign test (`beats_zero_shot`).
The held-out images also choose the epoch count and `a`, so "after" is slightly optimistic; `evaluate` on other
images is not.

The tricks themselves live in `clipapp.tricks`; this module only wires them together. No Gradio here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp.adapter import (Adapter, tuned_visual_copy, visual_blocks, visual_prefix, visual_suffix,
                             visual_top_names)
from clipapp.data import IMAGE_EXTENSIONS, ImageFolder, ImageSource
from clipapp.errors import ClipAppError, ImageLoadError
from clipapp.prompts import DEFAULT_TEMPLATES, parse_labels, resolve_templates
from clipapp.service import ClipService, batched

log = logging.getLogger(__name__)

MODES = ("head", "cache", "partial")
MONITORS = ("val_loss", "val_acc")
HEAD_INITS = ("zero-shot", "random")
ProgressFn = Callable[[float, str], None]
StopFlag = Optional[threading.Event | Callable[[], bool]]

# Zip uploads: generous for a few-shot set, far below what would fill a disk or memory.
MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 512 * 1024 * 1024
MAX_ZIP_RATIO = 100  # images barely compress; a member that inflates 100x is a bomb, not a photo
WISE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the blends tried when wise_alpha is None (0 = keep zero-shot)
WISE_ALPHA_UNVALIDATED = 0.5  # nothing held out to choose on: the middle, robust in the WiSE-FT paper
CACHE_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)
CACHE_BETAS = (1.0, 3.0, 5.5, 8.0, 12.0)


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class FinetuneConfig:
    """Every setting of a fine-tune, as plain data (`to_dict` / `from_dict` round-trip through JSON).

    A trick is off at 0 (mixup, cutmix, label_smoothing, ema, sam, focal, class_balanced, clip_grad).
    """

    mode: str = "head"  # head | cache | partial
    head_init: str = "zero-shot"  # zero-shot | random (a plain linear probe, for comparison only)
    templates: str | list[str] = DEFAULT_TEMPLATES
    epochs: int = 80
    # head learning rate (AdamW, cosine schedule over `epochs`) in logit units: the weights move by lr / logit_scale,
    # so a model with a sharp temperature (CLIP's 100) and one with a soft one (the demo model's 12) see the same
    # change in logits per step. EMA, WiSE, early stopping and the sign test keep it in check
    lr: float = 0.6
    batch_size: int = 16
    # an epoch is a pass over the training images, but at least this many steps: with 4 images per class a pass is
    # 2 steps, too few updates over `epochs` (digits, 4 shots, 6 seeds: 48.7% -> 51.7% top-1 in bench_fewshot)
    min_epoch_steps: int = 5
    # L2 pull of the head towards its start, the zero-shot weights (L2-SP). Off by default: with the held-out choice
    # of the WiSE blend and the zero-shot fallback it measured no better (bench_fewshot), and it hurts where the
    # zero-shot prior is wrong (classes the model has never seen)
    anchor_weight: float = 0.0
    # WiSE-FT blend: 0 = zero-shot weights, 1 = the fine-tuned ones; None = the best of WISE_ALPHAS on held-out data
    wise_alpha: Optional[float] = None
    # partial fine-tuning of the visual tower
    blocks: int = 2
    visual_lr: float = 1e-4  # the top tuned block; lower ones decay by layer_decay per block
    layer_decay: float = 0.75
    weight_decay: float = 0.05  # AdamW decay of the tuned visual matrices (never of the head)
    # tricks (the first three are on by default: measured better than without in bench/bench_fewshot.py)
    mixup: float = 0.2  # Beta(alpha, alpha); on features in head mode, on pixels in partial mode
    cutmix: float = 0.0  # partial mode only (needs pixels)
    label_smoothing: float = 0.1
    ema: float = 0.99  # decay
    sam: float = 0.0  # rho, e.g. 0.05
    focal: float = 0.0  # gamma, e.g. 2
    class_balanced: float = 0.0  # beta, e.g. 0.999: weights classes by their effective number of images
    clip_grad: float = 0.0  # max gradient norm
    # validation and early stopping
    patience: int = 8
    monitor: str = "val_loss"
    val_per_class: int = 0  # held-out images per class; 0 = val_fraction of each class (at least 1)
    val_fraction: float = 0.25
    # k-fold while a class has fewer images than this: every image is held out once, so the epoch count and the WiSE
    # blend are chosen on all of them instead of on a noisy handful (cheap for the head; each fold is a run)
    kfold_below: int = 20
    max_folds: int = 5
    refit: bool = True  # after a held-out split, train again on every image for the chosen epoch count
    # keep the zero-shot classifier unless the adapted one is better on the held-out images by a one-sided sign test
    # at `gain_p_value` (over the images exactly one of the two gets right). The same images chose the epoch and the
    # WiSE blend, so one or two more right is noise; a model that has learnt something wins by a clear margin
    require_gain: bool = True
    gain_p_value: float = 0.05
    # cache adapter; None = picked on the held-out data
    cache_alpha: Optional[float] = None
    cache_beta: Optional[float] = None
    seed: int = 0
    max_images: int = 5000

    def validate(self) -> "FinetuneConfig":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ClipAppError(f"Fine-tune setting: {message}")

        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        need(self.head_init in HEAD_INITS, f"head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}.")
        need(self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}.")
        need(0 <= int(self.epochs) <= 1000, f"epochs must be between 0 and 1000, got {self.epochs}.")
        need(self.lr > 0 and self.visual_lr > 0, "learning rates must be positive.")
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}.")
        need(self.min_epoch_steps >= 1, f"min_epoch_steps must be at least 1, got {self.min_epoch_steps}.")
        need(self.wise_alpha is None or 0.0 <= self.wise_alpha <= 1.0,
             f"WiSE alpha must be between 0 and 1 (or None: chosen on held-out data), got {self.wise_alpha}.")
        need(self.blocks >= 1, f"blocks must be at least 1, got {self.blocks}.")
        need(0.0 < self.layer_decay <= 1.0, f"layer decay must be in (0, 1], got {self.layer_decay}.")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0.")
        need(0.0 <= self.label_smoothing < 1.0, f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        need(0.0 <= self.ema < 1.0, f"EMA decay must be in [0, 1), e.g. 0.99; got {self.ema}.")
        need(self.sam >= 0 and self.focal >= 0 and self.clip_grad >= 0, "sam, focal and clip_grad must be >= 0.")
        need(0.0 <= self.class_balanced < 1.0, f"class-balanced beta must be in [0, 1), e.g. 0.999; got "
             f"{self.class_balanced}.")
        need(self.anchor_weight >= 0 and self.weight_decay >= 0, "anchor_weight and weight_decay must be >= 0.")
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}.")
        need(self.val_per_class >= 0, f"val_per_class must be >= 0, got {self.val_per_class}.")
        need(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        need(self.kfold_below >= 2 and self.max_folds >= 2, "kfold_below and max_folds must be at least 2.")
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
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClipAppError(f"Unknown fine-tune setting(s): {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))}).")
        return cls(**data).validate()


# ------------------------------------------------------------------------------------------------ labelled data
@dataclass
class LabelledImages:
    """Images with class indices into `class_names`. `sources` are paths, bytes or PIL images."""

    sources: list[ImageSource]
    targets: np.ndarray
    class_names: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=len(self.class_names))


def labelled_folder(data_dir: str | os.PathLike) -> LabelledImages:
    """DATA_DIR/<class name>/<image files>; class names are the folder names, sorted."""
    folder = ImageFolder.scan(data_dir)
    return LabelledImages(sources=[str(p) for p in folder.paths], targets=np.asarray(folder.targets, dtype=np.int64),
                          class_names=list(folder.class_names), names=[str(p) for p in folder.paths])


def labelled_uploads(items: Sequence[tuple[ImageSource, str]], *, names: Optional[Sequence[str]] = None,
                     class_names: Optional[Sequence[str]] = None) -> LabelledImages:
    """(image, class name) pairs, e.g. from uploads. Classes keep the order in which they first appear, or the
    order of `class_names` when given (every class there needs an image, every image a class there)."""
    if not items:
        raise ClipAppError("No labelled images given: upload a few images for each class.")
    labels = [" ".join(str(label).split()) for _, label in items]
    if not all(labels):
        raise ClipAppError("Every image needs a class name; one was empty.")
    if class_names is None:
        class_names = list(dict.fromkeys(labels))
    else:
        class_names = [" ".join(str(c).split()) for c in class_names]
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ClipAppError(f"Image label(s) {', '.join(map(repr, unknown[:5]))} are not among the class names.")
    parse_labels(class_names)  # same rules as zero-shot labels: unique, length, no control characters
    if len(class_names) < 2:
        raise ClipAppError(f"Found only the class {class_names[0]!r}; fine-tuning needs at least 2 classes.")
    index = {name: i for i, name in enumerate(class_names)}
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(items))]
    return LabelledImages(sources=[source for source, _ in items],
                          targets=np.asarray([index[label] for label in labels], dtype=np.int64),
                          class_names=list(class_names), names=names)


def _unsafe_member(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a path that leaves the archive folder (..)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if "\x00" in name:
        return "a NUL byte in its name"
    return None


def extract_labelled_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, *, max_files: int = MAX_ZIP_FILES,
                         max_total_bytes: int = MAX_ZIP_BYTES, max_ratio: float = MAX_ZIP_RATIO) -> Path:
    """Safely extract a zip of class folders (<class>/<image>, optionally under one top folder) into `dest`.

    Refuses the whole archive, with a message naming the entry, on: absolute paths, `..` components, symbolic
    links, more than `max_files` images, more than `max_total_bytes` uncompressed, or a member inflating more than
    `max_ratio` times (a zip bomb). Sizes are counted while extracting, not trusted from the header. Only image
    files are extracted; hidden files and `__MACOSX` are skipped. Returns the folder holding the class folders.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ClipAppError(f"{zip_path.name}: not a readable zip archive ({exc}).") from exc
    with archive:
        members = []
        for info in archive.infolist():
            problem = _unsafe_member(info)
            if problem:
                raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} is {problem}.")
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            members.append((info, parts))
        if len(members) > max_files:
            raise ClipAppError(f"{zip_path.name}: {len(members)} images; at most {max_files} are accepted.")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_total_bytes:
            raise ClipAppError(f"{zip_path.name}: {declared / 2**20:.0f} MiB uncompressed; at most "
                               f"{max_total_bytes / 2**20:.0f} MiB are accepted (a zip bomb?).")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        total = 0
        for info, parts in members:
            if info.compress_size and info.file_size > 2**20 and info.file_size / info.compress_size > max_ratio:
                raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} inflates "
                                   f"{info.file_size / info.compress_size:.0f}x (a zip bomb).")
            target = root.joinpath(*parts).resolve()
            if root not in target.parents:
                raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} leaves the archive folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with archive.open(info) as source, open(target, "wb") as out:
                while chunk := source.read(1 << 16):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > max_total_bytes:
                        raise ClipAppError(f"{zip_path.name}: refused, entry {info.filename!r} inflates beyond its "
                                           "declared size or the total limit (a zip bomb).")
                    out.write(chunk)
    if not members:
        raise ClipAppError(f"{zip_path.name}: no image files inside. Expected <class name>/<image files>.")
    # A zip of a folder has that folder on top: descend while there is exactly one folder and no images.
    top = root
    while True:
        entries = [p for p in top.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and len(dirs) == len(entries):
            top = dirs[0]
            continue
        break
    if any(p.is_file() for p in top.iterdir()):
        raise ClipAppError(f"{zip_path.name}: images must be inside one folder per class (<class name>/<image>), "
                           "not loose at the top of the archive.")
    return top


# ------------------------------------------------------------------------------------------------ splits
def stratified_split(targets: Sequence[int], *, val_per_class: int = 0, val_fraction: float = 0.25,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), each class in both parts: every class needs at least 2 images.

    A class with n images holds out `val_per_class` of them, or round(n * val_fraction); always 1 to n - 1.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        if len(members) < 2:
            raise ClipAppError(f"Class {int(label)} has {len(members)} image(s); a held-out split needs at least 2.")
        n_val = val_per_class if val_per_class > 0 else int(round(len(members) * val_fraction))
        n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def stratified_folds(targets: Sequence[int], k: int, *, seed: int = 0) -> list[np.ndarray]:
    """`k` disjoint held-out index sets covering every sample. Classes are dealt round-robin, one after another,
    from a random starting fold: per class the folds differ by at most one image, and overall by at most one too
    (so with one image per class no fold is left empty)."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    position = int(rng.integers(k))
    for label in np.unique(targets):
        for index in rng.permutation(np.flatnonzero(targets == label)):
            folds[position % k].append(int(index))
            position += 1
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


@dataclass
class ValidationPlan:
    kind: str  # holdout | kfold | none
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train, held-out) index pairs


def plan_validation(targets: np.ndarray, config: FinetuneConfig) -> ValidationPlan:
    """Held-out split when every class has `kfold_below` images or more, k-fold below that, none with 1 image."""
    counts = np.bincount(targets)
    counts = counts[counts > 0]
    all_indices = np.arange(len(targets))
    if len(targets) < 2:
        return ValidationPlan("none", [(all_indices, all_indices[:0])])
    smallest = int(counts.min())
    if smallest >= config.kfold_below or (config.val_per_class and smallest > config.val_per_class):
        train, val = stratified_split(targets, val_per_class=config.val_per_class, val_fraction=config.val_fraction,
                                      seed=config.seed)
        return ValidationPlan("holdout", [(train, val)])
    k = int(min(config.max_folds, max(2, smallest), len(targets)))
    folds = stratified_folds(targets, k, seed=config.seed)
    return ValidationPlan("kfold", [(np.setdiff1d(all_indices, fold), fold) for fold in folds if len(fold)])


# ------------------------------------------------------------------------------------------------ models
class HeadClassifier(nn.Module):
    """logits = logit_scale * normalize(features) @ weight.T + bias; at the start weight = the unit zero-shot
    embeddings and bias = 0, so an untrained head is exactly the zero-shot classifier."""

    def __init__(self, zero_shot_weights: np.ndarray | torch.Tensor, logit_scale: float):
        super().__init__()
        weights = torch.as_tensor(np.asarray(zero_shot_weights), dtype=torch.float32)
        self.weight = nn.Parameter(F.normalize(weights, dim=-1).clone())
        self.bias = nn.Parameter(torch.zeros(len(weights)))
        self.logit_scale = float(logit_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(features, dim=-1) @ self.weight.T + self.bias


class PartialClassifier(nn.Module):
    """The tuned top of a visual tower copy plus the head; input = activations entering the first tuned block.

    Only the tuned modules are registered, so `state_dict()` (used by EMA, early stopping and WiSE) is small; the
    frozen lower part is reached through `prefix()`. BatchNorm layers (ResNet towers) stay in eval mode: a few
    images per batch would only corrupt their running statistics.
    """

    def __init__(self, visual: nn.Module, first_tuned: int, head: HeadClassifier):
        super().__init__()
        self.blocks = nn.ModuleList([block for _, block in visual_blocks(visual)[first_tuned:]])
        for name in visual_top_names(visual):
            setattr(self, name, getattr(visual, name))  # the same module / Parameter objects as the copy's
        self.head = head
        self.first_tuned = first_tuned
        # Not a submodule: keeps the frozen part out of state_dict (deepcopy, as timm's EMA does, still copies it
        # consistently because the tuned blocks are the same objects inside it).
        object.__setattr__(self, "_visual", visual)

    def train(self, mode: bool = True) -> "PartialClassifier":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return visual_prefix(self._visual, pixels, self.first_tuned)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        return visual_suffix(self._visual, tokens, self.first_tuned)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))


@contextmanager
def wise_applied(model: nn.Module, anchor: dict[str, torch.Tensor], alpha: float) -> Iterator[nn.Module]:
    """Load (1 - alpha) * anchor + alpha * current weights into `model` for the block, then put them back."""
    if alpha >= 1.0:
        yield model
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(wise_blend(anchor, current, alpha))
    try:
        yield model
    finally:
        model.load_state_dict(current)


def wise_blend(anchor: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
               alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT weight-space ensemble: (1 - alpha) * anchor + alpha * tuned for every floating-point tensor."""
    out = {}
    for key, value in tuned.items():
        if key in anchor and value.is_floating_point():
            out[key] = (1.0 - alpha) * anchor[key].to(value) + alpha * value
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ results
@dataclass
class FinetuneResult:
    """What a fine-tune returns: the adapter, held-out metrics before (zero-shot) and after, curves and timings."""

    adapter: Adapter
    before: Optional[dict]
    after: Optional[dict]
    confusion_before: Optional[list[list[int]]]
    confusion_after: Optional[list[list[int]]]
    history: dict[str, list]
    validation: dict[str, Any]
    best_epoch: int
    stopped: bool
    skipped: list[str]
    notes: list[str]
    seconds: dict[str, float]
    config: FinetuneConfig

    @property
    def class_names(self) -> list[str]:
        return list(self.adapter.class_names)

    def to_dict(self) -> dict[str, Any]:
        from clipapp.adapter import _json_safe

        return _json_safe({
            "before": self.before,
            "after": self.after,
            "confusion": {"before": self.confusion_before, "after": self.confusion_after},
            "history": self.history,
            "validation": self.validation,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "skipped": self.skipped,
            "notes": self.notes,
            "seconds": self.seconds,
            "class_names": self.class_names,
            "mode": self.config.mode,
            "config": self.config.to_dict(),
        })


class FinetuneStopped(ClipAppError):
    """The stop flag was set before there was anything to save."""


def metrics_from_logits(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """{"top1", "top5", "n", "loss"}: accuracy, top-5 accuracy (top-k with k = min(5, classes)), mean cross-entropy."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n = int(len(targets))
    if n == 0:
        return {"top1": math.nan, "top5": math.nan, "n": 0, "loss": math.nan}
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)))
    return {"top1": float((top[:, 0] == targets).mean()), "top5": float((top == targets[:, None]).any(1).mean()),
            "n": n, "loss": loss}


def confusion_counts(predicted: np.ndarray, targets: np.ndarray, n_classes: int) -> list[list[int]]:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix.tolist()


# ------------------------------------------------------------------------------------------------ encoding
@dataclass
class EncodedImages:
    features: np.ndarray  # (n, dim) L2-normalised
    targets: np.ndarray
    names: list[str]
    images: list  # decoded PIL images (kept for partial fine-tuning)
    skipped: list[str]


def _stopped(stop: StopFlag) -> bool:
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())


def encode_labelled(service: ClipService, data: LabelledImages, *, progress: Optional[ProgressFn] = None,
                    stop: StopFlag = None, batch_size: int = 32) -> EncodedImages:
    """Decode every image once (bad files are skipped and named) and encode it with the resident model."""
    images, targets, names, skipped = [], [], [], []
    for source, target, name in zip(data.sources, data.targets, data.names):
        try:
            images.append(service.decode(source))
        except ImageLoadError as exc:
            skipped.append(str(exc))
            continue
        targets.append(int(target))
        names.append(name)
    chunks = []
    for start in range(0, len(images), batch_size):
        if _stopped(stop):
            raise FinetuneStopped("Fine-tuning stopped while encoding the images; nothing was saved.")
        chunks.append(service.encode_images(images[start:start + batch_size], batch_size=batch_size))
        if progress:
            done = min(start + batch_size, len(images))
            progress(done / max(1, len(images)), f"encoded {done}/{len(images)} images")
    features = np.concatenate(chunks) if chunks else np.zeros((0, service.embed_dim), dtype=np.float32)
    return EncodedImages(features, np.asarray(targets, dtype=np.int64), names, images, skipped)


# ------------------------------------------------------------------------------------------------ training
def _make_criterion(config: FinetuneConfig, counts: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss over probability-row targets (smoothing and mixing are already in the targets)."""
    from clipapp.tricks import ClassBalancedLoss, FocalLoss, class_balanced_weights

    if config.focal > 0:
        alpha = class_balanced_weights(counts, config.class_balanced) if config.class_balanced > 0 else None
        return FocalLoss(config.focal, alpha=alpha)
    if config.class_balanced > 0:
        return ClassBalancedLoss(counts, beta=config.class_balanced, loss_type="softmax")
    return nn.CrossEntropyLoss()


@dataclass
class _Inputs:
    """What the model eats for a set of images: features (head), or cached prefix tokens and pixels (partial)."""

    x: torch.Tensor  # features or prefix tokens, cached
    pixels: Optional[torch.Tensor] = None  # partial mode with pixel-space mixing

    def take(self, index: np.ndarray) -> "_Inputs":
        idx = torch.as_tensor(index, dtype=torch.long)
        return _Inputs(self.x[idx], None if self.pixels is None else self.pixels[idx])


@dataclass
class _Run:
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


def _score(monitor: str, loss: float, acc: float) -> float:
    """What model selection minimises. Accuracy on a few held-out images ties often: the loss breaks the ties."""
    return loss if monitor == "val_loss" else -acc + 1e-3 * min(loss, 100.0)


def _predict(model: nn.Module, inputs: _Inputs, batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(inputs.x[i:i + batch_size]) for i in range(0, len(inputs.x), batch_size)])
    finally:
        model.train(was_training)


def _train_run(*, build_model: Callable[[], nn.Module], anchor_head: torch.Tensor, inputs: _Inputs,
               targets: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, n_classes: int,
               config: FinetuneConfig, epochs: int, early_stop: bool, seed: int,
               steps_per_epoch: Optional[int] = None,
               on_epoch: Optional[Callable[[dict], None]] = None, progress: Optional[ProgressFn] = None,
               stop: StopFlag = None, stage: str = "") -> _Run:
    """Train one model on `train_idx`, evaluating the WiSE-blended weights on `val_idx` after every epoch."""
    from clipapp.tricks import (EarlyStopping, MixupCutmix, WeightEma, clip_gradients, layerwise_lr_groups,
                                make_sam, sam_step, soft_targets)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model()
    anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
    head = model.head if isinstance(model, PartialClassifier) else model
    partial = isinstance(model, PartialClassifier)
    anchor_head = anchor_head.to(head.weight.device)

    groups = [{"params": [head.weight, head.bias], "lr": config.lr / head.logit_scale, "weight_decay": 0.0}]
    if partial:  # torch wants names in every group or none; the layer-wise groups carry them
        groups[0]["param_names"] = ["head.weight", "head.bias"]
    if partial:
        # the tuned blocks, final norm and projection; lr decays with depth below the top block
        # ResNet towers decay by stage (layer1..4); nothing below the tuned blocks trains, so no embedding group
        block_regex = r"\.layer(\d+)\." if hasattr(model._visual, "attnpool") else r"\.resblocks\.(\d+)\."
        groups += layerwise_lr_groups(model._visual, config.visual_lr, config.layer_decay, block_regex=block_regex,
                                      embed_regex=r"^$", weight_decay=config.weight_decay)
    for group in groups:
        group["base_lr"] = group["lr"]
    if config.sam > 0:
        optimizer = make_sam(groups, torch.optim.AdamW, rho=config.sam, lr=config.lr)
    else:
        # fused: one kernel per step for all tensors; torch's default on CPU loops over them, which was a fifth of
        # partial fine-tuning's time on the demo model (34 s -> 10 s of a 16-shot digits run)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=True)
    ema = WeightEma(model, decay=config.ema) if config.ema > 0 else None
    stopper = EarlyStopping(config.patience, mode="min")  # on _score: lower is better
    train_counts = np.bincount(targets[train_idx], minlength=n_classes)
    criterion = _make_criterion(config, train_counts)
    pixel_mixing = partial and inputs.pixels is not None
    mix_alpha_ok = config.mixup > 0 or (pixel_mixing and config.cutmix > 0)
    mixer = MixupCutmix(n_classes, mixup_alpha=config.mixup, cutmix_alpha=config.cutmix if pixel_mixing else 0.0,
                        smoothing=config.label_smoothing, rng=rng) if mix_alpha_ok else None
    y_all = torch.as_tensor(targets, dtype=torch.long)
    train_inputs, val_inputs = inputs.take(train_idx), inputs.take(val_idx)
    y_train, y_val = y_all[train_idx], y_all[val_idx]
    # An epoch is a pass over the training images, unless the caller fixes the steps (the refit on all images
    # replays the validation runs' schedule: same updates, same learning rates, batches drawn from more images).
    steps_per_epoch = steps_per_epoch or epoch_steps(len(train_idx), config)
    total_steps = max(1, config.epochs * steps_per_epoch)  # the schedule of a full run, also when stopping early

    alphas = WISE_ALPHAS if config.wise_alpha is None else (config.wise_alpha,)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [],
                                "wise_alpha": []}
    val_logits: list[np.ndarray] = []
    val_scores: list[list[float]] = []

    def evaluate(epoch: int, train_loss: Optional[float], train_acc: Optional[float]) -> bool:
        """Record one epoch (the WiSE blend that scores best on held-out data); True when early stopping says stop."""
        with (ema.apply_to(model) if ema is not None else nullcontext()):
            if train_loss is None and len(train_idx):
                logits = _predict(model, train_inputs)
                train_loss = float(F.cross_entropy(logits, y_train))
                train_acc = float((logits.argmax(1) == y_train).float().mean())
            should_stop = False
            val_loss = val_acc = alpha = None
            if len(val_idx):
                per_alpha, scores = [], []
                for a in alphas:
                    with wise_applied(model, anchor, a):
                        logits = _predict(model, val_inputs)
                    loss = float(F.cross_entropy(logits, y_val))
                    acc = float((logits.argmax(1) == y_val).float().mean())
                    per_alpha.append((logits.numpy(), loss, acc))
                    scores.append(_score(config.monitor, loss, acc))
                if epoch == 0 and config.head_init == "random":
                    scores = [math.inf] * len(alphas)  # an untrained random head is no candidate: any epoch beats it
                pick = int(np.argmin(scores))  # ties go to the smaller alpha: closer to zero-shot
                val_logits.append(np.stack([logits for logits, _, _ in per_alpha]))
                val_scores.append(scores)
                _, val_loss, val_acc = per_alpha[pick]
                alpha = alphas[pick]
                should_stop = stopper.step(scores[pick], model)
        for key, value in zip(history, (epoch, train_loss, train_acc, val_loss, val_acc, alpha)):
            history[key].append(value)
        if on_epoch:
            on_epoch({"stage": stage, **{k: list(v) for k, v in history.items()}})
        return should_stop and early_stop

    evaluate(0, None, None)
    if not len(train_idx):
        epochs = 0  # a fold that holds out everything: only the zero-shot point
    step, stopped = 0, False
    model.train()
    def batches() -> Iterator[np.ndarray]:
        while True:
            order = rng.permutation(len(train_idx))
            for start in range(0, len(order), config.batch_size):
                yield order[start:start + config.batch_size]

    stream = batches()
    for epoch in range(1, epochs + 1):
        losses, correct, seen = [], 0, 0
        for _ in range(steps_per_epoch):
            if _stopped(stop):
                stopped = True
                break
            batch = next(stream)
            x = (train_inputs.pixels if pixel_mixing else train_inputs.x)[torch.as_tensor(batch)]
            y = y_train[torch.as_tensor(batch)]
            if mixer is not None:
                mixed = mixer(x, y)
                x, soft = mixed.inputs, mixed.targets
            else:
                soft = soft_targets(y, n_classes, smoothing=config.label_smoothing)
            if pixel_mixing:
                x = model.prefix(x)
            factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor

            first_logits: list[torch.Tensor] = []

            def closure() -> torch.Tensor:
                logits = model(x)
                loss = criterion(logits, soft)
                if config.anchor_weight > 0:
                    loss = loss + config.anchor_weight * (head.weight - anchor_head).pow(2).sum(1).mean()
                loss.backward()
                if config.clip_grad > 0:
                    clip_gradients(model.parameters(), config.clip_grad)
                if not first_logits:  # SAM calls this twice; the first pass is at the real weights
                    first_logits.append(logits.detach())
                return loss

            if config.sam > 0:
                loss = sam_step(optimizer, closure, model=model)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = closure()
                optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            losses.append(float(loss.detach()))
            correct += int((first_logits[0].argmax(1) == soft.argmax(1)).sum())
            seen += len(batch)
        if stopped and not losses:
            break
        if progress:
            progress(epoch / max(1, epochs), f"{stage}epoch {epoch}/{epochs}, loss {np.mean(losses):.3f}")
        if evaluate(epoch, float(np.mean(losses)), correct / max(1, seen)) or stopped:
            break

    if len(val_idx) and stopper.best_state is not None:
        best_epoch = int(stopper.best_step)
        best_alpha = history["wise_alpha"][best_epoch]
        stopper.restore(model)
    else:
        best_epoch = len(history["epoch"]) - 1
        best_alpha = WISE_ALPHA_UNVALIDATED if config.wise_alpha is None else config.wise_alpha
        if ema is not None:
            model.load_state_dict(ema.module.state_dict())
    return _Run(history, val_logits, np.asarray(val_scores, dtype=np.float64).reshape(-1, len(alphas)), alphas,
                best_epoch, best_alpha, stopped, {k: v.detach().clone() for k, v in model.state_dict().items()})


# ------------------------------------------------------------------------------------------------ the fine-tune
def finetune(service: ClipService, data: LabelledImages, config: Optional[FinetuneConfig] = None, *,
             name: str = "adapter", progress: Optional[ProgressFn] = None,
             on_epoch: Optional[Callable[[dict], None]] = None, stop: StopFlag = None) -> FinetuneResult:
    """Adapt `service`'s model to `data`'s classes; returns the adapter and the evidence that it is better.

    `progress(fraction, message)` is called as work advances; `on_epoch(history)` after every epoch with the current
    run's curves (for live plots); setting `stop` (an Event or a callable) ends training at the next step and keeps
    the best model so far. The resident model is only read.
    """
    config = (config or FinetuneConfig()).validate()
    timings: dict[str, float] = {}
    notes: list[str] = []
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    if len(data) > config.max_images:
        raise ClipAppError(f"{len(data)} images given; fine-tuning takes at most {config.max_images}.")
    class_names = list(data.class_names)
    n_classes = len(class_names)
    if n_classes < 2:
        raise ClipAppError("Fine-tuning needs at least 2 classes.")
    templates = list(resolve_templates(config.templates))

    report(0.0, "encoding class prompts")
    zero_shot = service.text_embeddings(class_names, templates)
    encode_share = 0.3
    encoded = encode_labelled(service, data, stop=stop,
                              progress=lambda f, m: report(encode_share * f, m))
    timings["encode"] = time.perf_counter() - started
    counts = np.bincount(encoded.targets, minlength=n_classes)
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ClipAppError(f"No usable image for class(es) {', '.join(map(repr, empty))}"
                           + (f" ({'; '.join(encoded.skipped[:3])})" if encoded.skipped else "") + ".")
    if config.mode != "partial" and config.cutmix > 0:
        notes.append("CutMix needs pixels: it applies in mode 'partial' only and was not used.")

    plan = plan_validation(encoded.targets, config)
    features = torch.from_numpy(encoded.features)
    logit_scale = float(service.logit_scale)
    start_weights = zero_shot
    if config.head_init == "random":
        # A probe from scratch, for comparison: the head starts at (and the anchor pull and WiSE go towards) random
        # directions instead of the zero-shot classifier.
        generator = torch.Generator().manual_seed(config.seed)
        start_weights = F.normalize(torch.randn(zero_shot.shape, generator=generator), dim=-1).numpy()
    anchor_head = torch.from_numpy(start_weights)
    adapter_kwargs = dict(name=name, class_names=class_names, spec=service.spec, logit_scale=logit_scale,
                          templates=templates)

    # the inputs every run trains on
    visual = first_tuned = None
    if config.mode == "partial":
        visual, first_tuned, _ = tuned_visual_copy(service.trainable_model(), config.blocks)
        visual = visual.to(service.device)
        pixels = torch.stack([service.preprocess(image) for image in encoded.images]).to(service.device)
        with torch.no_grad():
            tokens = torch.cat([visual_prefix(visual, pixels[i:i + 64], first_tuned)
                                for i in range(0, len(pixels), 64)])
        pixel_mixing = config.mixup > 0 or config.cutmix > 0
        inputs = _Inputs(tokens, pixels if pixel_mixing else None)
        zero_visual = {n: p.detach().clone() for n, p in visual.named_parameters() if p.requires_grad}

        def build_model() -> nn.Module:
            visual.load_state_dict(zero_visual, strict=False)  # every run starts from the resident weights
            head = HeadClassifier(start_weights, logit_scale)
            return PartialClassifier(visual, first_tuned, head).to(service.device)
    else:
        inputs = _Inputs(features)

        def build_model() -> nn.Module:
            return HeadClassifier(start_weights, logit_scale)

    zero_logits = logit_scale * encoded.features @ zero_shot.T
    val_sets = [val for _, val in plan.splits]
    held_out = np.concatenate(val_sets) if plan.kind != "none" else np.zeros(0, dtype=np.int64)
    history: dict[str, list] = {}
    stopped = False
    best_epoch = 0

    if config.mode == "cache":
        after_logits, best = _fit_cache(encoded, zero_logits, plan, config, n_classes)
        if config.require_gain and plan.kind != "none" and \
                not beats_zero_shot(after_logits, zero_logits, encoded.targets, held_out, config.gain_p_value):
            after_logits, best = zero_logits.copy(), (0.0, best[1])
            notes.append("The cache did not clearly beat zero-shot on the held-out images (sign test): its weight "
                         "is set to 0.")
        adapter = Adapter(head=zero_shot, mode="cache", cache_keys=encoded.features,
                          cache_values=np.eye(n_classes, dtype=np.float32)[encoded.targets],
                          cache_alpha=best[0], cache_beta=best[1], **adapter_kwargs)
        notes.append(f"cache alpha {best[0]:g}, beta {best[1]:g}"
                     + (" (chosen on held-out data)" if plan.kind != "none" else " (defaults: no held-out data)"))
    else:
        train_share = 1.0 - encode_share
        n_runs = len(plan.splits) + (1 if (plan.kind == "kfold" or (plan.kind == "holdout" and config.refit)) else 0)
        runs: list[_Run] = []
        run_kwargs = dict(build_model=build_model, anchor_head=anchor_head, inputs=inputs, targets=encoded.targets,
                          n_classes=n_classes, config=config, on_epoch=on_epoch, stop=stop)
        for i, (train_idx, val_idx) in enumerate(plan.splits):
            stage = f"fold {i + 1}/{len(plan.splits)}: " if plan.kind == "kfold" else ""
            base = encode_share + train_share * i / n_runs
            run = _train_run(train_idx=train_idx, val_idx=val_idx, epochs=config.epochs,
                             early_stop=plan.kind == "holdout", seed=config.seed + i, stage=stage,
                             progress=lambda f, m, b=base: report(b + train_share * f / n_runs, m), **run_kwargs)
            runs.append(run)
            if run.stopped:
                stopped = True
                break
        if plan.kind == "kfold" and not stopped:
            # the epoch count whose mean held-out score over the folds is best, then predictions out of fold
            length = min(len(r.val_logits) for r in runs)
            mean = np.mean([r.val_scores[:length] for r in runs], axis=0)  # (epochs, alphas), minimised
            best_epoch, best_alpha_index = (int(i) for i in np.unravel_index(np.argmin(mean), mean.shape))
            best_alpha = runs[0].alphas[best_alpha_index]
            after_logits = np.zeros((len(encoded.targets), n_classes), dtype=np.float32)
            for (_, val_idx), run in zip(plan.splits, runs):
                after_logits[val_idx] = run.val_logits[best_epoch][best_alpha_index]
            history = {k: np.array([[math.nan if v is None else v for v in r.history[k][:length]] for r in runs],
                                   dtype=np.float64).mean(0).tolist() for k in runs[0].history}
        else:
            # a held-out split (or no validation, or a stop): the last run's best weights are the model
            run = runs[-1]
            best_epoch, best_alpha = run.best_epoch, run.best_alpha
            history = run.history
            if plan.kind != "none":
                val_idx = plan.splits[len(runs) - 1][1]
                held_out = val_idx
                after_logits = np.zeros((len(encoded.targets), n_classes), dtype=np.float32)
                after_logits[val_idx] = run.val_logits[best_epoch][run.alphas.index(best_alpha)]
            final_state = run.state

        if best_epoch > 0 and config.require_gain and plan.kind != "none" and \
                not beats_zero_shot(after_logits, zero_logits, encoded.targets, held_out, config.gain_p_value):
            best_epoch = 0
            after_logits = zero_logits.copy()
        refit = not stopped and (plan.kind == "kfold" or (plan.kind == "holdout" and config.refit))
        if best_epoch == 0:
            final_state = build_model().state_dict()  # the start: the zero-shot classifier
            if plan.kind != "none" and counts.min() < 2:
                notes.append("A class has a single image, so every held-out image belongs to a class its fold never "
                             "trained on and cannot show a gain: the adapter keeps the zero-shot classifier. Add a "
                             "second image per class.")
            elif plan.kind != "none":
                notes.append("Training did not clearly beat zero-shot on the held-out images (sign test): the adapter "
                             "keeps the zero-shot classifier.")
        elif refit:
            everything = np.arange(len(encoded.targets))
            report(encode_share + train_share * (n_runs - 1) / n_runs,
                   f"training on all images for {best_epoch} epochs")
            fold_steps = epoch_steps(max(len(t) for t, _ in plan.splits), config)
            run = _train_run(train_idx=everything, val_idx=everything[:0], epochs=best_epoch, early_stop=False,
                             seed=config.seed + 1000, stage="all images: ", steps_per_epoch=fold_steps,
                             progress=lambda f, m: report(encode_share + train_share * ((n_runs - 1) + f) / n_runs, m),
                             **{**run_kwargs, "on_epoch": None})
            if run.stopped:
                stopped = True
                notes.append("Stopped while training on all images: kept the model trained without the held-out part.")
                if plan.kind == "kfold":
                    final_state = run.state
            else:
                final_state = run.state
        model = build_model()
        anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(wise_blend(anchor, final_state, best_alpha))
        if config.wise_alpha is None and plan.kind != "none" and best_epoch > 0:
            notes.append(f"WiSE-FT alpha {best_alpha:g} chosen on the held-out images"
                         + (": the zero-shot weights were best, kept as they are." if best_alpha == 0 else "."))
        head = model.head if isinstance(model, PartialClassifier) else model
        visual_state = {}
        if isinstance(model, PartialClassifier):
            tuned_names = [n for n, p in visual.named_parameters() if p.requires_grad]
            params = dict(visual.named_parameters())
            visual_state = {f"visual.{n}": params[n].detach().cpu().clone() for n in tuned_names}
            visual.load_state_dict(zero_visual, strict=False)
        adapter = Adapter(head=head.weight.detach().cpu().numpy(), head_bias=head.bias.detach().cpu().numpy(),
                          mode=config.mode,
                          visual_state=visual_state, visual_blocks=config.blocks if visual_state else 0,
                          **adapter_kwargs)
    timings["train"] = time.perf_counter() - started - timings["encode"]  # every run, the refit included
    timings["total"] = time.perf_counter() - started

    before = after = conf_before = conf_after = None
    if plan.kind != "none" and len(held_out):
        y = encoded.targets[held_out]
        before = metrics_from_logits(zero_logits[held_out], y)
        after = metrics_from_logits(after_logits[held_out], y)
        conf_before = confusion_counts(zero_logits[held_out].argmax(1), y, n_classes)
        conf_after = confusion_counts(after_logits[held_out].argmax(1), y, n_classes)
    else:
        notes.append("Too few images to hold any out: no before/after numbers. Add images (2+ per class).")
    validation = {"kind": plan.kind, "folds": len(plan.splits) if plan.kind == "kfold" else 0,
                  "n_images": int(len(encoded.targets)), "n_held_out": int(len(held_out)),
                  "per_class": counts.tolist()}
    adapter.config = config.to_dict()
    adapter.metrics = {"before": before, "after": after, "validation": validation, "best_epoch": best_epoch,
                       "wise_alpha": None if config.mode == "cache" else best_alpha}
    report(1.0, "done")
    return FinetuneResult(adapter=adapter, before=before, after=after, confusion_before=conf_before,
                          confusion_after=conf_after, history=history, validation=validation, best_epoch=best_epoch,
                          stopped=stopped, skipped=encoded.skipped, notes=notes,
                          seconds={k: round(v, 3) for k, v in timings.items()}, config=config)


def beats_zero_shot(logits: np.ndarray, zero_logits: np.ndarray, targets: np.ndarray, held_out: np.ndarray,
                    p_value: float = 0.05) -> bool:
    """Is the adapted classifier better than zero-shot on the held-out images, beyond chance?

    A one-sided sign test (exact binomial, McNemar's exact test) on the discordant images: `wins` that only the
    adapted one gets right, `losses` that only zero-shot gets right. Under "no better" each is a fair coin.
    """
    from scipy.stats import binomtest

    y = targets[held_out]
    adapted_right = logits[held_out].argmax(1) == y
    zero_right = zero_logits[held_out].argmax(1) == y
    wins, losses = int((adapted_right & ~zero_right).sum()), int((zero_right & ~adapted_right).sum())
    if wins <= losses:
        return False
    return binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue <= p_value


def _fit_cache(encoded: EncodedImages, zero_logits: np.ndarray, plan: ValidationPlan, config: FinetuneConfig,
               n_classes: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Pick the cache blend (alpha, beta) on held-out data; returns (held-out logits at the best blend, best)."""
    features, targets = encoded.features, encoded.targets
    values = np.eye(n_classes, dtype=np.float32)[targets]
    alphas = [config.cache_alpha] if config.cache_alpha is not None else list(CACHE_ALPHAS)
    betas = [config.cache_beta] if config.cache_beta is not None else list(CACHE_BETAS)
    if plan.kind == "none":  # nothing to choose on: Tip-Adapter's defaults unless set
        alphas = [1.0 if config.cache_alpha is None else config.cache_alpha]
        betas = [5.5 if config.cache_beta is None else config.cache_beta]
    affinities = []
    for train_idx, val_idx in plan.splits:
        if len(val_idx):
            affinities.append((val_idx, 1.0 - features[val_idx] @ features[train_idx].T, values[train_idx]))

    def logits_for(alpha: float, beta: float) -> np.ndarray:
        out = np.zeros_like(zero_logits)
        for val_idx, distance, support in affinities:
            out[val_idx] = zero_logits[val_idx] + alpha * np.exp(-beta * distance) @ support
        return out

    if not affinities or (len(alphas) == 1 and len(betas) == 1):
        best = (alphas[0], betas[0])
        return logits_for(*best), best
    from clipapp.tricks import run_sweep

    held_out = np.concatenate([v for v, _, _ in affinities])

    def score(params: dict) -> float:
        m = metrics_from_logits(logits_for(params["alpha"], params["beta"])[held_out], targets[held_out])
        return m["top1"] - 1e-3 * m["loss"]  # accuracy first, the loss breaks ties on small held-out sets

    result = run_sweep(score, {"alpha": alphas, "beta": betas}, method="grid", seed=config.seed)
    best = (float(result.best.params["alpha"]), float(result.best.params["beta"]))
    return logits_for(*best), best


# ------------------------------------------------------------------------------------------------ convenience
def finetune_folder(service: ClipService, data_dir: str | os.PathLike, config: Optional[FinetuneConfig] = None, *,
                    out: Optional[str | os.PathLike] = None, **kwargs) -> FinetuneResult:
    """`finetune` on DATA_DIR/<class>/<images> (or a .zip of that layout); saves the adapter to `out` if given."""
    data_dir = Path(data_dir)
    with _maybe_extracted(data_dir) as root:
        data = labelled_folder(root)
        name = Path(out).name.removesuffix(".safetensors").removesuffix(".json") if out else "adapter"
        result = finetune(service, data, config, name=name, **kwargs)
    if out:
        result.adapter.save(out)
    return result


@contextmanager
def _maybe_extracted(path: Path) -> Iterator[Path]:
    if path.is_file() and path.suffix.lower() == ".zip":
        folder = Path(tempfile.mkdtemp(prefix="clipapp-zip-"))
        try:
            yield extract_labelled_zip(path, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield path


def evaluate(service: ClipService, data_dir: str | os.PathLike, adapter: Optional[Adapter] = None, *,
             templates: str | Sequence[str] | None = DEFAULT_TEMPLATES, batch_size: int = 32) -> dict[str, float]:
    """Top-1 / top-5 accuracy on DATA_DIR/<class>/<images>: {"top1", "top5", "n"}.

    Zero-shot on the folder names, or with `adapter`, whose classes must include every folder name.
    Unreadable images are skipped (not counted in n).
    """
    with _maybe_extracted(Path(data_dir)) as root:
        data = labelled_folder(root)
        if adapter is not None:
            adapter.check_service(service)
            missing = [c for c in data.class_names if c not in adapter.class_names]
            if missing:
                raise ClipAppError(f"Folder class(es) {', '.join(map(repr, missing[:5]))} are not classes of adapter "
                                   f"{adapter.name!r} ({', '.join(adapter.class_names[:10])}).")
            remap = np.array([adapter.class_names.index(c) for c in data.class_names])
        if adapter is not None and adapter.visual_state:
            stream = _adapter_features(service, adapter, data.sources, batch_size=batch_size)
        else:
            stream = service.encode_image_files(data.sources, batch_size=batch_size)
        paths, features = [], []
        for path, vector, error in stream:
            if vector is None:
                log.warning("skipped %s", error)
                continue
            paths.append(path)
            features.append(vector)
        by_path = {p: t for p, t in zip(data.sources, data.targets)}
        targets = np.array([by_path[p] for p in paths], dtype=np.int64)
        if not features:
            raise ClipAppError(f"{data_dir}: no readable images.")
        features = np.stack(features)
        if adapter is None:
            logits = service.logit_scale * features @ service.text_embeddings(data.class_names, templates).T
        else:
            logits = adapter.logits_from_features(features)
            targets = remap[targets]
    m = metrics_from_logits(logits, targets)
    return {"top1": m["top1"], "top5": m["top5"], "n": m["n"]}


def _adapter_features(service: ClipService, adapter: Adapter, paths: Sequence[str], batch_size: int = 32):
    """(path, vector or None, error or None) through the adapter's tuned tower, one forward pass per batch."""
    for chunk in batched(paths, batch_size):
        decoded = []
        for path in chunk:
            try:
                decoded.append((path, service.decode(path), None))
            except ImageLoadError as exc:
                decoded.append((path, None, str(exc)))
        good = [image for _, image, _ in decoded if image is not None]
        vectors = iter(adapter.image_features(service, good, batch_size=batch_size) if good else ())
        for path, image, error in decoded:
            yield path, (next(vectors) if image is not None else None), error
