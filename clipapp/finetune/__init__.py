"""Few-shot adaptation ("Fine-tune"): a handful of labelled images per class -> an `Adapter` that beats zero-shot.

Three modes, all starting from the zero-shot classifier so that zero training steps *is* zero-shot:
  head     a linear head initialised from the zero-shot text embeddings of the class prompts, trained on image
           features encoded once (seconds on a CPU); logits = logit_scale * normalize(f) @ W.T + b, with
           W = the unit text embeddings and b = 0 at the start. Initialising from zero-shot (not at random) is what
           keeps few shots from falling below zero-shot. The rows of W are free to grow: a cosine head is capped at
           logit differences of 2 * logit_scale, too soft where the model's scale is small (the demo model's is 12)
           or its embeddings of a new domain all lie close together.
  cache    training-free cache adapter in the Tip-Adapter spirit: keys = support features, values = one-hot labels,
           logits = zero-shot + alpha * exp(-beta (1 - f @ keys.T)) @ values; alpha and beta picked on held-out data.
  partial  the head plus the last N blocks of the visual tower (ViT or ModifiedResNet), trained on a deep copy (the
           resident model is never touched) with layer-wise lr decay. The frozen lower blocks run once per image and
           augmented view; mixup and CutMix act on those cached activations (features.py).
Weight-space ensembling (WiSE-FT) blends the tuned weights with the zero-shot ones, W = (1-a) W_zs + a W_ft, with
`a` fixed or chosen on held-out data. A stratified held-out split (k-fold while a class has fewer than
`kfold_below` images) drives early stopping, the choice of `a` and the before/after report; the adapter is then
refit on every image for the chosen epoch count, and kept only if it beat zero-shot on the held-out images by a
sign test (`beats_zero_shot`).
The held-out images also choose the epoch count and `a`, so "after" is slightly optimistic;
`clipapp.classify.evaluation.evaluate_folder` on other images is not.

Modules, one concern each: config (settings), intake (labelled images in), features (encoding and the activation
cache), towers (the visual tower split at a block), trainable (the models trained over features), loop (one
training run), model_choice (splits, WiSE, the choice of epoch and blend, the sign test, the cache blend), adapter
(the Adapter and its file format), assemble (the adapter from trained weights), results, run (`finetune` itself).
The tricks live in `clipapp.tricks`. No Gradio here.

Importing the package is cheap: the settings (config) load at once, every other name loads its module (and torch)
on first use (PEP 562), so the CLI's parser can read `FinetuneConfig` without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clipapp.finetune.config import (
    CACHE_ALPHAS,
    CACHE_BETAS,
    HEAD_INITS,
    MIX_SPACES,
    MODE_DEFAULTS,
    MODES,
    MONITORS,
    WISE_ALPHA_UNVALIDATED,
    WISE_ALPHAS,
    FinetuneConfig,
    StopFlag,
)

if TYPE_CHECKING:
    from clipapp.finetune.assemble import cache_adapter, trained_adapter
    from clipapp.finetune.features import EncodedImages, Inputs, TokenGrid, encode_labelled, prepare_training
    from clipapp.finetune.intake import (
        LabelledImages,
        check_index,
        labelled_class_lists,
        labelled_csv,
        labelled_folder,
        labelled_paths,
        labelled_uploads,
        parse_class_spec,
    )
    from clipapp.finetune.loop import Run, epoch_steps, train_run
    from clipapp.finetune.model_choice import (
        ValidationPlan,
        beats_zero_shot,
        fit_cache,
        plan_validation,
        stratified_folds,
        stratified_split,
        wise_applied,
        wise_blend,
    )
    from clipapp.finetune.results import FinetuneResult, FinetuneStopped, confusion_counts, metrics_from_logits
    from clipapp.finetune.run import finetune, finetune_folder, finetune_labelled
    from clipapp.finetune.trainable import PartialTower, TrainableHead
    from clipapp.images.archive import MAX_ZIP_BYTES, MAX_ZIP_FILES, MAX_ZIP_RATIO, extract_labelled_zip

# name -> the module (of this package, or a full name) that defines it, imported on first use
_LAZY = {
    "cache_adapter": "assemble",
    "trained_adapter": "assemble",
    "EncodedImages": "features",
    "Inputs": "features",
    "TokenGrid": "features",
    "encode_labelled": "features",
    "prepare_training": "features",
    "MAX_ZIP_BYTES": "clipapp.images.archive",
    "MAX_ZIP_FILES": "clipapp.images.archive",
    "MAX_ZIP_RATIO": "clipapp.images.archive",
    "LabelledImages": "intake",
    "check_index": "intake",
    "extract_labelled_zip": "clipapp.images.archive",
    "labelled_class_lists": "intake",
    "labelled_csv": "intake",
    "labelled_folder": "intake",
    "labelled_paths": "intake",
    "labelled_uploads": "intake",
    "parse_class_spec": "intake",
    "Run": "loop",
    "epoch_steps": "loop",
    "train_run": "loop",
    "TrainableHead": "trainable",
    "PartialTower": "trainable",
    "FinetuneResult": "results",
    "FinetuneStopped": "results",
    "confusion_counts": "results",
    "metrics_from_logits": "results",
    "finetune": "run",
    "finetune_folder": "run",
    "finetune_labelled": "run",
    "ValidationPlan": "model_choice",
    "beats_zero_shot": "model_choice",
    "fit_cache": "model_choice",
    "plan_validation": "model_choice",
    "stratified_folds": "model_choice",
    "stratified_split": "model_choice",
    "wise_applied": "model_choice",
    "wise_blend": "model_choice",
}


# names before 0.2: the module warns on each lookup, so they are not cached here
_RENAMED = {"HeadClassifier": "trainable", "PartialClassifier": "trainable", "ProgressFn": "config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name) or _RENAMED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    if name in _LAZY:
        globals()[name] = value  # the next lookup is a plain one
    return value


__all__ = [
    "CACHE_ALPHAS",
    "CACHE_BETAS",
    "HEAD_INITS",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_FILES",
    "MAX_ZIP_RATIO",
    "MIX_SPACES",
    "MODE_DEFAULTS",
    "MODES",
    "MONITORS",
    "WISE_ALPHAS",
    "WISE_ALPHA_UNVALIDATED",
    "EncodedImages",
    "FinetuneConfig",
    "FinetuneResult",
    "FinetuneStopped",
    "TrainableHead",
    "Inputs",
    "LabelledImages",
    "PartialTower",
    "Run",
    "StopFlag",
    "TokenGrid",
    "ValidationPlan",
    "beats_zero_shot",
    "cache_adapter",
    "check_index",
    "confusion_counts",
    "encode_labelled",
    "epoch_steps",
    "extract_labelled_zip",
    "finetune",
    "finetune_folder",
    "finetune_labelled",
    "fit_cache",
    "labelled_class_lists",
    "labelled_csv",
    "labelled_folder",
    "labelled_paths",
    "labelled_uploads",
    "metrics_from_logits",
    "parse_class_spec",
    "plan_validation",
    "prepare_training",
    "stratified_folds",
    "stratified_split",
    "train_run",
    "trained_adapter",
    "wise_applied",
    "wise_blend",
]
