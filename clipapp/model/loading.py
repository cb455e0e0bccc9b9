"""Model specs and loading: the one place that turns `--model SPEC` into a resident open_clip model.

Spec strings (docs/architecture.md):
  demo                      the bundled Fashion-MNIST demo model (package data: clipapp/assets/demo)
  NAME:TAG                  open_clip pretrained tag, e.g. ViT-B-32:laion2b_s34b_b79k (downloaded or cached)
  NAME:/path/to/weights     a local checkpoint (.safetensors, or .pt/.bin read with weights_only=True)
  NAME:random               the architecture with random weights (tests and benchmarks only)
  hf-hub:ORG/REPO           an open_clip model on the Hugging Face hub

open_clip is imported inside the functions that need it: importing it pulls torchvision and torch._dynamo (~2.6 s
measured), which `import clipapp.model.service` (every CLI command's `--help`, the tests) need not pay.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, cast

import torch

from clipapp.errors import ModelLoadError
from clipapp.model.device import select_device, select_precision

log = logging.getLogger(__name__)

DEFAULT_SPEC = "ViT-B-32:laion2b_s34b_b79k"
DEMO_SPEC = "demo"
DEMO_MODEL_NAME = "clipapp-demo"
DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"  # package data: ships in the wheel
DEMO_WEIGHTS = DEMO_MODEL_DIR / f"{DEMO_MODEL_NAME}.safetensors"
SPEC_ENV = "CLIPAPP_MODEL"
HUB_PROBE_SECONDS = 4.0
PROBE_IMAGES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples" / "photos"  # a checkout only
PROBE_TEXTS = ("a photo of a cat.", "a photo of a rocket.", "a page of printed text.", "a red sneaker.")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")

# Registering configs mutates open_clip's global registry: do it once, under a lock.
_registry_lock = threading.Lock()
_registered_dirs: set[Path] = set()


CONFIG_DIRS_ENV = "CLIPAPP_MODEL_CONFIGS"  # extra folders of open_clip model configs, separated by os.pathsep


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


class ClipTowers(Protocol):
    """The calls clipapp makes on an open_clip model (CLIP, CustomTextCLIP or their int8 copies). torch types a
    Module's attributes as `Tensor | Module`, so `model.encode_image(...)` on an `nn.Module` does not type-check."""

    logit_scale: torch.Tensor

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...


def towers(model: torch.nn.Module) -> ClipTowers:
    """`model` seen through `ClipTowers` (every model `load_model` returns has them)."""
    return cast(ClipTowers, model)


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


@dataclass
class LoadedModel:
    """A model ready for inference, with what a user needs to know about where it came from."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    spec: str  # the spec actually loaded
    requested_spec: str
    device: torch.device
    precision: str
    embed_dim: int
    context_length: int
    notice: Optional[str] = None  # why another model than the requested one is loaded
    precision_note: Optional[str] = None  # why this precision, when it was chosen automatically
    load_seconds: float = 0.0

    @property
    def description(self) -> str:
        text = f"{self.spec} on {self.device.type} ({self.precision_note or self.precision})"
        if self.spec == DEMO_SPEC:
            text += " — demo model trained on Fashion-MNIST, knows clothing classes only"
        return text


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "CLIPAPP_OFFLINE"))


def _run_with_deadline(fn: Callable[[], Any], seconds: float) -> Any:
    """Run `fn` in a daemon thread; raise TimeoutError if it has not returned in time (DNS can hang)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def resolve_pretrained_weights(name: str, tag: str) -> tuple[Optional[str], Optional[str]]:
    """Find the weights of an open_clip pretrained tag without waiting long on a network that isn't there.

    Returns (path or tag to pass to open_clip, None) when loadable, or (None, reason) when not.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

        repo_id, filename = os.path.split(hub_id.rstrip("/") if hub_id.endswith("/") else hub_id)
        filename = filename or "open_clip_pytorch_model.bin"
        for candidate in ("open_clip_model.safetensors", filename):
            cached = try_to_load_from_cache(repo_id, candidate)
            if isinstance(cached, str):
                return cached, None
        if _offline():
            return (
                None,
                f"weights for {name}:{tag} are not in the local cache and the hub is switched off (offline mode)",
            )
        try:
            _run_with_deadline(
                lambda: get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_PROBE_SECONDS),
                HUB_PROBE_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means "not reachable"
            return (
                None,
                f"weights for {name}:{tag} are not cached and the model hub cannot be reached ({type(exc).__name__})",
            )
        return tag, None  # reachable: let open_clip download with its own progress
    if _offline():
        return None, f"weights for {name}:{tag} need a download and offline mode is on"
    return tag, None


def resolve_spec(spec: Optional[str] = None, *, allow_fallback: bool = True) -> str:
    """The spec `load_model` would load, without loading it: `demo` when pretrained weights cannot be had.
    For processes that hand the spec to others (Ray workers) and must agree with the app on the model."""
    parsed = parse_spec(spec)
    if parsed.kind == "pretrained" and allow_fallback:
        weights, reason = resolve_pretrained_weights(parsed.name, parsed.tag)
        if weights is None:
            log.warning("Using the demo model instead of %s: %s.", parsed.text, reason)
            return DEMO_SPEC
    return parsed.text


def _create(name: str, pretrained: Optional[str], device: torch.device, precision: str):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, precision=precision, weights_only=True
    )
    return model, preprocess


def load_model(
    spec: Optional[str] = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    allow_fallback: bool = True,
) -> LoadedModel:
    """Load a model once, resident on `device`, in eval mode.

    When a pretrained tag cannot be had (offline and not cached) and `allow_fallback` is set, the bundled demo
    model is loaded instead and `notice` says why. A missing or unreadable local checkpoint is always an error.
    """
    import open_clip

    start = time.perf_counter()
    parsed = parse_spec(spec)
    torch_device = select_device(device)
    auto_precision = (precision or "auto").lower() == "auto"
    precision = select_precision(precision, torch_device)
    create_precision = "fp32" if precision in ("int8", "amp") else precision  # amp: fp32 weights, autocast
    register_model_configs()
    notice = None
    loaded_spec = parsed

    if parsed.kind == "pretrained":
        weights, reason = resolve_pretrained_weights(parsed.name, parsed.tag)
        if weights is None:
            if not allow_fallback:
                raise ModelLoadError(f"Cannot load {parsed.text}: {reason}.")
            notice = f"Loaded the demo model instead of {parsed.text}: {reason}."
            log.warning(notice)
            loaded_spec = parse_spec(DEMO_SPEC)
        else:
            loaded_spec = ModelSpec(parsed.text, "pretrained", parsed.name, weights)

    kind = loaded_spec.kind
    try:
        weights = None if kind in ("random", "hf-hub") else loaded_spec.weights
        if kind in ("file", "demo"):
            path = Path(loaded_spec.tag).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"Weights file not found: {path}")
            weights = str(path)
        model, preprocess = _create(loaded_spec.name, weights, torch_device, create_precision)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip/torch/safetensors raise many types for bad files
        where = loaded_spec.weights or loaded_spec.name
        raise ModelLoadError(
            f"Could not load model {loaded_spec.text!r} from {where}: {type(exc).__name__}: {exc}"
        ) from exc

    model.eval()
    tokenizer = open_clip.get_tokenizer(loaded_spec.name)
    precision_note = f"{precision} (auto)" if auto_precision else None
    # int8 only when asked: `auto` must give open_clip's own numbers (fp32 on a CPU: probabilities within ~1e-6
    # of plain open_clip; int8 moved them by up to 2e-3 on the demo model). bench/bench_classify.py prints its
    # speed and top-1 agreement with fp32.
    if precision == "int8":
        model, cosine, speedup = quantize_int8(model, preprocess, tokenizer)
        precision_note = f"int8: min cosine {cosine:.4f} to fp32, {speedup:.2f}x its speed on probe inputs"
    embed_dim = _embed_dim(model)
    context_length = int(getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None) or 77)
    loaded = LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        spec=loaded_spec.text if loaded_spec.kind != "pretrained" else parsed.text,
        requested_spec=parsed.text,
        device=torch_device,
        precision=precision,
        embed_dim=embed_dim,
        context_length=context_length,
        notice=notice,
        precision_note=precision_note,
        load_seconds=time.perf_counter() - start,
    )
    log.info("Loaded %s in %.1f s", loaded.description, loaded.load_seconds)
    return loaded


def _embed_dim(model: torch.nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if output_dim:
        return int(output_dim)
    with torch.no_grad():
        return int(towers(model).encode_text(torch.zeros(1, 77, dtype=torch.long)).shape[-1])


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Save tensors as safetensors atomically (temp file, fsync, rename): a crash never leaves a torn file."""
    from safetensors.torch import save_file

    from clipapp.storage import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


class LinearSelfAttention(torch.nn.Module):
    """`nn.MultiheadAttention` (batch-first self-attention) with its projections as plain `nn.Linear`s, so dynamic
    quantization reaches them too: MultiheadAttention reads `in_proj_weight` directly, which int8 cannot replace.
    Written by hand: torch has no quantizable drop-in for the batch-first module open_clip uses."""

    def __init__(self, attention: torch.nn.MultiheadAttention):
        super().__init__()
        width = attention.embed_dim
        self.num_heads = attention.num_heads
        self.in_proj = torch.nn.Linear(width, 3 * width, bias=attention.in_proj_bias is not None)
        self.out_proj = torch.nn.Linear(width, width, bias=attention.out_proj.bias is not None)
        with torch.no_grad():
            self.in_proj.weight.copy_(attention.in_proj_weight)
            self.out_proj.weight.copy_(attention.out_proj.weight)
            if attention.in_proj_bias is not None:
                self.in_proj.bias.copy_(attention.in_proj_bias)
            if attention.out_proj.bias is not None:
                self.out_proj.bias.copy_(attention.out_proj.bias)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        batch, length, width = query.shape
        q, k, v = self.in_proj(query).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width)), None


def _with_linear_self_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Swap each batch-first self-attention of open_clip's transformer blocks for `LinearSelfAttention`."""
    for module in model.modules():
        attention = getattr(module, "attn", None)
        if (
            isinstance(attention, torch.nn.MultiheadAttention)
            and attention.batch_first
            and attention._qkv_same_embed_dim
            and not getattr(module, "is_cross_attention", False)
            and type(module).__name__ == "ResidualAttentionBlock"
            and not hasattr(module, "ln_1_kv")
        ):
            module.attn = LinearSelfAttention(attention)
    return model


def quantize_int8(model: torch.nn.Module, preprocess, tokenizer) -> tuple[torch.nn.Module, float, float]:
    """Dynamic int8 quantization of the Linear layers (CPU): (the int8 model, the lowest cosine between the fp32
    and int8 embeddings of a few probe images and texts, int8's speed-up over fp32 on them)."""
    import copy
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantized tensors deprecated in favour of torchao
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        copied = _with_linear_self_attention(copy.deepcopy(model))
        # Exact nn.Linear only (any MultiheadAttention left reads its out_proj by weight), and not ModifiedResNet's
        # attention pool, which reads its projections' `.weight` directly: quantized Linears have none.
        skip_parents = {name for name, module in copied.named_modules() if type(module).__name__ == "AttentionPool2d"}
        targets = {
            name: default_dynamic_qconfig
            for name, module in copied.named_modules()
            if type(module) is torch.nn.Linear and name.rpartition(".")[0] not in skip_parents
        }
        quantized = quantize_dynamic(copied, targets, dtype=torch.qint8)
    for module in quantized.modules():
        if hasattr(module, "_packed_params"):
            # open_clip reads the compute dtype from the MLP weight, which quantized Linears no longer expose.
            module.int8_original_dtype = torch.float32
    images = [Image.open(p).convert("RGB") for p in sorted(PROBE_IMAGES_DIR.glob("*.jpg"))[:4]]
    if not images:
        generator = torch.Generator().manual_seed(0)
        images = [Image.fromarray((torch.rand(64, 64, 3, generator=generator) * 255).byte().numpy()) for _ in range(4)]
    pixels = torch.stack([preprocess(image) for image in images])
    tokens = tokenizer(list(PROBE_TEXTS))
    with torch.inference_mode():
        cosines = [
            torch.nn.functional.cosine_similarity(reference(inputs), candidate(inputs), dim=-1).min()
            for reference, candidate, inputs in (
                (towers(model).encode_image, towers(quantized).encode_image, pixels),
                (towers(model).encode_text, towers(quantized).encode_text, tokens),
            )
        ]
    speedup = _probe_seconds(model, pixels, tokens) / _probe_seconds(quantized, pixels, tokens)
    return quantized, float(min(cosines)), speedup


def _probe_seconds(model: torch.nn.Module, pixels: torch.Tensor, tokens: torch.Tensor) -> float:
    """Best of three timed passes over the probe inputs (the first call of a model pays one-off costs)."""
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            towers(model).encode_image(pixels)
            towers(model).encode_text(tokens)
            best = min(best, time.perf_counter() - start)
    return best
