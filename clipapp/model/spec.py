"""Which model: spec strings, the default and demo specs, open_clip config folders, and the one decision of what
to load when a pretrained tag's weights cannot be had (`choose`: the demo model, or an error).

Spec strings (docs/architecture.md):
  demo                      the bundled Fashion-MNIST demo model (package data: clipapp/assets/demo)
  NAME:TAG                  open_clip pretrained tag, e.g. ViT-B-32:laion2b_s34b_b79k (downloaded or cached)
  NAME:/path/to/weights     a local checkpoint (.safetensors, or .pt/.bin read with weights_only=True)
  NAME:random               the architecture with random weights (tests and benchmarks only)
  hf-hub:ORG/REPO           an open_clip model on the Hugging Face hub

open_clip is imported inside the functions that need it (~2.6 s: it pulls torchvision and torch._dynamo).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from clipapp.errors import ModelLoadError
from clipapp.model.hub import resolve_pretrained_weights

log = logging.getLogger(__name__)

# The default model, chosen from the catalog (clipapp/model/catalog.py; why: docs/models.md#choosing-the-default):
# 72.8% ImageNet zero-shot against ViT-B-32 laion2b's 66.6%, MIT weights, no extra dependency, the same parameters
# and text tower, 1.3x the image FLOPs (open_clip's model_profile.csv: 11.5 against 8.8 GFLOPs; its images/s on a
# 2-core CPU: `clipapp models`). Every help text and hint names this constant.
DEFAULT_SPEC = "ViT-B-32-256:datacomp_s34b_b86k"
DEMO_SPEC = "demo"
DEMO_MODEL_NAME = "clipapp-demo"
DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"  # package data: ships in the wheel
DEMO_WEIGHTS = DEMO_MODEL_DIR / f"{DEMO_MODEL_NAME}.safetensors"
SPEC_ENV = "CLIPAPP_MODEL"
CONFIG_DIRS_ENV = "CLIPAPP_MODEL_CONFIGS"  # extra folders of open_clip model configs, separated by os.pathsep
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")

# Registering configs mutates open_clip's global registry: do it once, under a lock.
_registry_lock = threading.Lock()
_registered_dirs: set[Path] = set()


def register_model_configs(folder: Optional[Path] = None) -> None:
    """Make the open_clip model configs (*.json) in `folder` known to open_clip by name; without a folder, the
    demo model's and those named by $CLIPAPP_MODEL_CONFIGS."""
    if folder is None:
        extra = [Path(p) for p in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if p]
        for each in (DEMO_MODEL_DIR, *extra):
            register_model_configs(each)
        return
    folder = Path(folder).resolve()
    with _registry_lock:
        if folder not in _registered_dirs and folder.is_dir():
            import open_clip

            open_clip.add_model_config(folder)
            _registered_dirs.add(folder)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec. `kind` is one of demo, pretrained, file, random, hf-hub."""

    text: str
    kind: str
    name: str
    weights: Optional[str] = None

    def __str__(self) -> str:
        return self.text

    @property
    def tag(self) -> str:
        """The pretrained tag (or weights path) of a pretrained, file or demo spec."""
        if self.weights is None:
            raise ModelLoadError(f"Model spec {self.text!r} names no weights.")
        return self.weights


def default_spec() -> str:
    return os.environ.get(SPEC_ENV) or DEFAULT_SPEC


def parse_spec(spec: Optional[str]) -> ModelSpec:
    text = (spec or default_spec()).strip()
    if text == DEMO_SPEC:
        return ModelSpec(text, "demo", DEMO_MODEL_NAME, str(DEMO_WEIGHTS))
    if text.startswith("hf-hub:"):
        if len(text) <= len("hf-hub:") or "/" not in text:
            raise ModelLoadError(f"Model spec {text!r}: expected hf-hub:ORG/REPO.")
        return ModelSpec(text, "hf-hub", text)
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise ModelLoadError(
            f"Model spec {text!r} not understood: use demo, NAME:TAG (e.g. {DEFAULT_SPEC}), "
            "NAME:/path/to/weights, NAME:random or hf-hub:ORG/REPO."
        )
    import open_clip

    register_model_configs()
    if name not in open_clip.list_models():
        raise ModelLoadError(
            f"Model spec {text!r}: {name!r} is not an open_clip architecture (see open_clip.list_models())."
        )
    if rest == "random":
        return ModelSpec(text, "random", name)
    if os.sep in rest or rest.startswith(".") or rest.lower().endswith(_WEIGHT_SUFFIXES):
        return ModelSpec(text, "file", name, rest)
    if rest not in open_clip.list_pretrained_tags_by_model(name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelLoadError(f"Model spec {text!r}: unknown pretrained tag {rest!r} for {name} (known: {tags}).")
    return ModelSpec(text, "pretrained", name, rest)


@dataclass(frozen=True)
class ChosenModel:
    """What to load for a requested spec: `load` is the requested spec (a pretrained tag's `weights` set to the
    cached file or the tag to download) or, when those weights cannot be had, the demo model, with `notice`."""

    requested: ModelSpec
    load: ModelSpec
    notice: Optional[str] = None  # why another model than the requested one is loaded


def choose(spec: Optional[str] = None, *, allow_fallback: bool = True) -> ChosenModel:
    """The one place that decides on the demo-model fallback: when a pretrained tag's weights are neither cached
    nor reachable, the demo model (`allow_fallback`) or a ModelLoadError. Other kinds load as written."""
    parsed = parse_spec(spec)
    if parsed.kind != "pretrained":
        return ChosenModel(parsed, parsed)
    weights, reason = resolve_pretrained_weights(parsed.name, parsed.tag)
    if weights is not None:
        return ChosenModel(parsed, ModelSpec(parsed.text, "pretrained", parsed.name, weights))
    if not allow_fallback:
        raise ModelLoadError(f"Cannot load {parsed.text}: {reason}.")
    notice = f"Loaded the demo model instead of {parsed.text}: {reason}."
    log.warning(notice)
    return ChosenModel(parsed, parse_spec(DEMO_SPEC), notice)


def resolve_spec(spec: Optional[str] = None, *, allow_fallback: bool = True) -> str:
    """The spec `load_model` would load, without loading it: `demo` when pretrained weights cannot be had.
    For processes that hand the spec to others (Ray workers) and must agree with the app on the model.
    Without `allow_fallback` the spec is returned as parsed, unprobed: loading it says whether it can be had."""
    if not allow_fallback:
        return parse_spec(spec).text
    return choose(spec).load.text
