"""A few-shot adapter on top of a resident CLIP model, and its file format: load, save and classify with it.

An adapter is what `clipapp.finetune` produces, stored as two small files next to each other:
  <name>.safetensors  tensors only: `head.weight` (n_classes, dim) always, `head.bias` (n_classes,) from format 2;
                      `cache.keys` / `cache.values` for the training-free cache adapter; `visual.<parameter name>`
                      for the visual blocks that were tuned
  <name>.json         class names, the model spec it was made for, templates, settings, metrics, format version
Never a pickle: loading an adapter cannot run code. The resident model is never modified: an adapter with tuned
visual blocks classifies with its own copy of the visual tower (clipapp.finetune.towers).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp.errors import ClipAppError
from clipapp.finetune.config import MODES
from clipapp.finetune.towers import tower_with_weights, unfit_weights
from clipapp.images.decode import ImageSource
from clipapp.model import scoring
from clipapp.model.service import ClipService, ZeroShotResult, batched
from clipapp.storage import file_sha256
from clipapp.vectors import normalize_rows

ADAPTER_FORMAT = "clipapp-adapter"
FORMAT_VERSION = 2  # 2: a linear head (free row norms and a bias); version-1 files load unchanged
VISUAL_PREFIX = "visual."


def adapter_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(`<name>.safetensors`, `<name>.json`) for `path` given with either suffix or none."""
    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


# -- the adapter ----------------------------------------------------------------------------------------------------
@dataclass(eq=False)  # identity semantics: arrays do not compare as one bool, and Gradio state hashes by id
class Adapter:
    """Classifier weights (and optionally a cache and tuned visual blocks) for `class_names` on model `spec`.

    logits = logit_scale * normalize(f) @ head.T + head_bias
             [+ cache_alpha * exp(-cache_beta (1 - f @ keys.T)) @ values]
    where f is the image embedding, through the tuned visual blocks when there are any.
    """

    name: str
    class_names: list[str]
    spec: str
    head: np.ndarray  # (n_classes, dim); zero-shot: the unit text embeddings, after training: any norms
    logit_scale: float
    head_bias: Optional[np.ndarray] = None  # (n_classes,); None = zeros
    mode: str = "head"
    templates: list[str] = field(default_factory=list)
    cache_keys: Optional[np.ndarray] = None  # (n_support, dim)
    cache_values: Optional[np.ndarray] = None  # (n_support, n_classes), one-hot
    cache_alpha: float = 0.0
    cache_beta: float = 0.0
    visual_state: dict[str, torch.Tensor] = field(default_factory=dict)  # tuned parameters, names under model.visual
    visual_blocks: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # (id(model), tuned copy) built on first use
    _visual: Optional[tuple[int, nn.Module]] = field(default=None, repr=False, compare=False)
    _visual_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.head = np.asarray(self.head, dtype=np.float32)
        if self.head.ndim != 2 or self.head.shape[0] != len(self.class_names):
            raise ClipAppError(
                f"Adapter {self.name!r}: head has shape {self.head.shape} for {len(self.class_names)} classes."
            )
        bias = np.zeros(len(self.class_names)) if self.head_bias is None else self.head_bias
        self.head_bias = np.asarray(bias, dtype=np.float32).reshape(-1)
        if self.head_bias.shape != (len(self.class_names),):
            raise ClipAppError(
                f"Adapter {self.name!r}: head bias has {self.head_bias.size} values for "
                f"{len(self.class_names)} classes."
            )
        if (self.cache_keys is None) != (self.cache_values is None):
            raise ClipAppError(f"Adapter {self.name!r}: a cache needs both its keys and its values.")
        if self.mode not in MODES:
            raise ClipAppError(f"Adapter {self.name!r}: unknown mode {self.mode!r} (known: {', '.join(MODES)}).")

    @property
    def dim(self) -> int:
        return int(self.head.shape[1])

    def check_service(self, service: ClipService) -> None:
        if service.spec != self.spec:
            raise ClipAppError(
                f"Adapter {self.name!r} was made for model {self.spec!r}, but {service.spec!r} is "
                f"loaded. Load that model (--model {self.spec}) or fine-tune again on this one."
            )
        if service.embed_dim != self.dim:
            raise ClipAppError(
                f"Adapter {self.name!r} has {self.dim}-d weights; model {service.spec!r} makes "
                f"{service.embed_dim}-d embeddings."
            )
        check_visual_state(self, service)

    # -- features ---------------------------------------------------------------------------------------------
    def image_features(
        self, service: ClipService, images: Sequence[ImageSource], *, batch_size: int = 32
    ) -> np.ndarray:
        """L2-normalised image embeddings as this adapter sees them (through its tuned blocks, if any)."""
        self.check_service(service)
        if not self.visual_state:
            return service.encode_images(images, batch_size=batch_size)
        visual = self._tuned_visual(service)
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for chunk in batched(images, batch_size):
            pixels = torch.stack([service.preprocess(service.decode(image)) for image in chunk])
            with self._visual_lock, torch.inference_mode():
                features = visual(pixels.to(service.device, dtype=torch.float32))
            out.append(F.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def _tuned_visual(self, service: ClipService) -> nn.Module:
        with self._visual_lock:
            if self._visual is None or self._visual[0] != id(service.model):
                resident = service.trainable_model().get_submodule("visual")
                self._visual = (id(service.model), tower_with_weights(resident, _tower_names(self.visual_state)))
            return self._visual[1]

    # -- scores -----------------------------------------------------------------------------------------------
    def logits_from_features(self, features: np.ndarray) -> np.ndarray:
        features = normalize_rows(features, what=None)
        logits = self.logit_scale * (features @ self.head.T) + self.head_bias
        if self.cache_keys is not None and self.cache_values is not None and self.cache_alpha:
            affinity = np.exp(-self.cache_beta * (1.0 - features @ self.cache_keys.T))
            logits = logits + self.cache_alpha * (affinity @ self.cache_values)
        return logits.astype(np.float32)

    def probs_from_features(self, features: np.ndarray) -> np.ndarray:
        return scoring.probabilities(self.logits_from_features(features))

    def cosine(self, service: ClipService, images: Sequence[ImageSource]) -> np.ndarray:
        """(n_images, n_classes) cosine of each image embedding to each class row of the head."""
        return self.image_features(service, images) @ normalize_rows(self.head, what=None).T

    def classify(self, service: ClipService, images: Sequence[ImageSource], *, unknown: bool = False) -> ZeroShotResult:
        """Probabilities over `class_names`, as `ClipService.zero_shot` returns them (`.top(k)`, `.probs`).
        `unknown`: "none of these" against the class names' text embeddings, as `classify --adapter` gives it; not
        for an adapter with tuned visual blocks (its features are its own, off the calibration)."""
        from clipapp.model.unknown import detector

        features = self.image_features(service, images)
        return ZeroShotResult(
            labels=list(self.class_names),
            logits=self.logits_from_features(features),
            cosine=features @ normalize_rows(self.head, what=None).T,
            unknown=detector(service, self.class_names)(features) if unknown and not self.visual_state else None,
        )

    # -- files ------------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": ADAPTER_FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "mode": self.mode,
            "class_names": list(self.class_names),
            "model_spec": self.spec,
            "embed_dim": self.dim,
            "logit_scale": float(self.logit_scale),
            "templates": list(self.templates),
            "cache": {
                "alpha": float(self.cache_alpha),
                "beta": float(self.cache_beta),
                "size": 0 if self.cache_keys is None else int(self.cache_keys.shape[0]),
            },
            "visual_blocks": int(self.visual_blocks),
            "visual_parameters": sorted(self.visual_state),
            "config": self.config,
            "metrics": self.metrics,
        }

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write `<path>.safetensors` and `<path>.json` so that a crash at any moment leaves a loadable adapter,
        the previous one or the new one, never a mix: the new tensors go to `<path>.safetensors.next`, the JSON
        (naming their sha256) is the commit point, then `.next` is renamed over the old tensors. `load_adapter`
        finishes that rename if a crash came between the two."""
        from clipapp.model.checkpoint import save_state_dict
        from clipapp.storage import fsync_dir, write_json_atomic

        weights_path, meta_path = adapter_paths(path)
        pending = _pending_weights_path(weights_path)
        tensors = {"head.weight": torch.from_numpy(self.head), "head.bias": torch.from_numpy(self.head_bias)}
        if self.cache_keys is not None:
            tensors["cache.keys"] = torch.from_numpy(np.asarray(self.cache_keys, dtype=np.float32))
            tensors["cache.values"] = torch.from_numpy(np.asarray(self.cache_values, dtype=np.float32))
        for name, tensor in self.visual_state.items():
            tensors[name] = tensor.float()
        save_state_dict(tensors, pending)
        write_json_atomic(meta_path, {**_json_safe(self.metadata()), "weights_sha256": file_sha256(pending)})
        os.replace(pending, weights_path)
        fsync_dir(weights_path.parent)
        return weights_path, meta_path


def _pending_weights_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name + ".next")


def _roll_forward(weights_path: Path, expected_sha256: Optional[str]) -> None:
    """Finish a save that crashed after its JSON was committed but before its tensors were renamed into place."""
    pending = _pending_weights_path(weights_path)
    if not expected_sha256 or not pending.is_file():
        return
    if (not weights_path.is_file() or file_sha256(weights_path) != expected_sha256) and file_sha256(
        pending
    ) == expected_sha256:
        os.replace(pending, weights_path)


def load_adapter(path: str | Path, *, expected_spec: Optional[str] = None) -> Adapter:
    """Read an adapter saved by `Adapter.save`; `path` may name either file or their common stem.

    A missing or corrupt file, or an adapter made for another model than `expected_spec`, is a ClipAppError.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, meta_path = adapter_paths(path)
    meta = _read_metadata(weights_path, meta_path, expected_spec)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ClipAppError(
            f"Adapter weights {weights_path} cannot be read (corrupt or not safetensors): {exc}"
        ) from exc
    try:
        adapter = _adapter_from(meta, tensors, weights_path, meta_path)
    except ClipAppError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ClipAppError(f"Adapter {meta_path} is incomplete or inconsistent ({type(exc).__name__}: {exc}).") from exc
    keys, values = adapter.cache_keys, adapter.cache_values
    if keys is not None and values is not None:  # both or neither: _adapter_from read both
        if values.shape != (keys.shape[0], len(adapter.class_names)):
            raise ClipAppError(f"Adapter {weights_path}: cache values do not match the cache keys and classes.")
        if keys.shape[1] != adapter.dim:
            raise ClipAppError(f"Adapter {weights_path}: cache keys are {keys.shape[1]}-d, the head {adapter.dim}-d.")
    return adapter


def _read_metadata(weights_path: Path, meta_path: Path, expected_spec: Optional[str]) -> dict[str, Any]:
    """The JSON half, checked: present, a clipapp adapter of a readable version, for `expected_spec`, naming the
    tensors file beside it (a save that crashed before its rename is finished first)."""
    if not meta_path.is_file():
        raise ClipAppError(
            f"Adapter file not found: {meta_path} (an adapter is a .safetensors file with its .json "
            "beside it, as written by `python -m clipapp finetune`)."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClipAppError(f"Adapter file {meta_path} is not valid JSON ({exc}).") from exc
    if isinstance(meta, dict):
        _roll_forward(weights_path, meta.get("weights_sha256"))
    for needed in (meta_path, weights_path):
        if not needed.is_file():
            raise ClipAppError(
                f"Adapter file not found: {needed} (an adapter is a .safetensors file with its .json "
                "beside it, as written by `python -m clipapp finetune`)."
            )
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        raise ClipAppError(f'{meta_path} is not a clipapp adapter description (no "format": "{ADAPTER_FORMAT}").')
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ClipAppError(
            f"Adapter {meta_path} has format version {version!r}; this clipapp reads up to "
            f"{FORMAT_VERSION}. Update clipapp."
        )
    spec = str(meta.get("model_spec", ""))
    if expected_spec is not None and spec != expected_spec:
        raise ClipAppError(
            f"Adapter {meta_path.name} was made for model {spec!r}, but {expected_spec!r} is loaded. "
            f"Run with --model {spec} or fine-tune again on this model."
        )
    expected_sha256 = meta.get("weights_sha256")
    if expected_sha256 and file_sha256(weights_path) != expected_sha256:
        raise ClipAppError(
            f"Adapter weights {weights_path} do not belong to {meta_path.name} (changed or damaged "
            "since it was saved); fine-tune again or restore both files together."
        )
    return meta


def _adapter_from(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], weights_path: Path, meta_path: Path
) -> Adapter:
    """The Adapter that a checked description and its tensors describe (version-1 files have no bias)."""
    cache = meta.get("cache") or {}
    has_cache = "cache.keys" in tensors
    visual_state = {k: v for k, v in tensors.items() if k.startswith(VISUAL_PREFIX)}
    if set(visual_state) != set(meta.get("visual_parameters") or []):
        raise ClipAppError(f"Adapter {weights_path}: visual parameters in the file do not match {meta_path.name}.")
    return Adapter(
        name=str(meta.get("name") or weights_path.stem),
        class_names=[str(c) for c in meta["class_names"]],
        spec=str(meta.get("model_spec", "")),
        head=tensors["head.weight"].float().numpy(),
        head_bias=tensors["head.bias"].float().numpy() if "head.bias" in tensors else None,
        logit_scale=float(meta["logit_scale"]),
        mode=str(meta.get("mode", "head")),
        templates=list(meta.get("templates") or []),
        cache_keys=tensors["cache.keys"].float().numpy() if has_cache else None,
        cache_values=tensors["cache.values"].float().numpy() if has_cache else None,
        cache_alpha=float(cache.get("alpha", 0.0)) if has_cache else 0.0,
        cache_beta=float(cache.get("beta", 0.0)) if has_cache else 0.0,
        visual_state=visual_state,
        visual_blocks=int(meta.get("visual_blocks", 0)),
        config=dict(meta.get("config") or {}),
        metrics=dict(meta.get("metrics") or {}),
    )


def check_visual_state(adapter: Adapter, service: ClipService) -> None:
    """Refuse tuned visual weights whose names or shapes do not fit the loaded model's visual tower."""
    if not adapter.visual_state:
        return
    unfit = unfit_weights(service.trainable_model().get_submodule("visual"), _tower_names(adapter.visual_state))
    if unfit:
        name = VISUAL_PREFIX + unfit[0]
        raise ClipAppError(f"Adapter {adapter.name!r}: tuned weight {name} does not fit model {service.spec!r}.")


def _tower_names(visual_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's `visual.<name>` keys as parameter names under the tower."""
    return {name[len(VISUAL_PREFIX) :]: tensor for name, tensor in visual_state.items()}


# -- helpers --------------------------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: strict JSON readers (browsers, jq) reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
