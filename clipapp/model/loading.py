"""Loading: the one place that turns `--model SPEC` into a resident open_clip model (`load_model` -> `LoadedModel`),
the calls clipapp makes on it (`ClipTowers`), and its embedding size (`embed_dim`, `model_embed_dim`).

Which model a spec names and the demo fallback are in clipapp/model/spec.py, the hub probe in hub.py, weights files
in checkpoint.py, int8 in quantize.py. open_clip is imported inside the functions that need it: importing it pulls
torchvision and torch._dynamo (~2.6 s measured), which `import clipapp.model.service` (every CLI command's
`--help`, the tests) need not pay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, cast

import torch

from clipapp.errors import ModelLoadError
from clipapp.extras import import_extra
from clipapp.model.checkpoint import local_weights
from clipapp.model.device import select_device, select_precision
from clipapp.model.spec import DEMO_SPEC, choose, parse_spec, register_model_configs

log = logging.getLogger(__name__)


class ClipTowers(Protocol):
    """The calls clipapp makes on an open_clip model (CLIP, CustomTextCLIP or their int8 copies). torch types a
    Module's attributes as `Tensor | Module`, so `model.encode_image(...)` on an `nn.Module` does not type-check."""

    logit_scale: torch.Tensor

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...


def towers(model: torch.nn.Module) -> ClipTowers:
    """`model` seen through `ClipTowers` (every model `load_model` returns has them)."""
    return cast(ClipTowers, model)


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


def hugging_face_parts(name: str) -> Optional[str]:
    """What of model `name` comes from Hugging Face `transformers` (its open_clip config's text tower or tokenizer:
    SigLIP / SigLIP2, the multilingual xlm-roberta / nllb / mt5 models), or None. A hf-hub: model's config is
    remote and not looked at here; `_tokenizer` still turns a missing `transformers` into the same error."""
    import open_clip

    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        return f"its Hugging Face text tower ({text_cfg['hf_model_name']})"
    if text_cfg.get("hf_tokenizer_name"):
        return f"its Hugging Face tokenizer ({text_cfg['hf_tokenizer_name']})"
    return None


def require_hf_extra(name: str) -> None:
    """A MissingExtraError naming `clipapp[hf]` when model `name` needs `transformers` and it is not installed
    (open_clip itself fails with a ModuleNotFoundError traceback, or "pip install transformers", mid-load)."""
    parts = hugging_face_parts(name)
    if parts is not None:
        import_extra("transformers", extra="hf", feature=f"Model {name!r} ({parts})")


def _tokenizer(name: str) -> Callable[..., torch.Tensor]:
    import open_clip

    try:
        return open_clip.get_tokenizer(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("transformers", "tokenizers"):
            import_extra(exc.name, extra="hf", feature=f"Model {name!r} (its Hugging Face tokenizer)")
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/huggingface_hub raise many types (offline, bad files)
        why = " ".join(str(exc).split()).rstrip(".")  # transformers' messages span lines: the error is one
        raise ModelLoadError(
            f"Could not load {hugging_face_parts(name) or 'its tokenizer'} for model {name!r}: "
            f"{type(exc).__name__}: {why}. A Hugging Face tokenizer "
            "is downloaded on first use: connect to the internet once (without HF_HUB_OFFLINE=1) to cache it."
        ) from exc


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
    model is loaded instead and `notice` says why (`spec.choose`). A missing or unreadable local checkpoint is
    always an error.
    """
    start = time.perf_counter()
    parse_spec(spec)  # a bad spec is reported before a bad device, and before the hub is probed
    torch_device = select_device(device)
    auto_precision = (precision or "auto").lower() == "auto"
    precision = select_precision(precision, torch_device)
    create_precision = "fp32" if precision in ("int8", "amp") else precision  # amp: fp32 weights, autocast
    chosen = choose(spec, allow_fallback=allow_fallback)
    loaded_spec = chosen.load
    register_model_configs()
    require_hf_extra(loaded_spec.name)
    tokenizer = _tokenizer(loaded_spec.name)  # before the model: a tokenizer that cannot be had fails in a second
    try:
        weights = None if loaded_spec.kind in ("random", "hf-hub") else loaded_spec.weights
        if loaded_spec.kind in ("file", "demo"):
            weights = local_weights(loaded_spec.tag)
        model, preprocess = _create(loaded_spec.name, weights, torch_device, create_precision)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip/torch/safetensors raise many types for bad files
        where = loaded_spec.weights or loaded_spec.name
        raise ModelLoadError(
            f"Could not load model {loaded_spec.text!r} from {where}: {type(exc).__name__}: {exc}"
        ) from exc

    model.eval()
    precision_note = f"{precision} (auto)" if auto_precision else None
    # int8 only when asked: `auto` must give open_clip's own numbers (fp32 on a CPU: probabilities within ~1e-6
    # of plain open_clip; int8 moved them by up to 2e-3 on the demo model). bench/bench_classify.py prints its
    # speed and top-1 agreement with fp32.
    if precision == "int8":
        from clipapp.model.quantize import quantize_int8

        model, cosine, speedup = quantize_int8(model, preprocess, tokenizer)
        precision_note = f"int8: min cosine {cosine:.4f} to fp32, {speedup:.2f}x its speed on probe inputs"
    context_length = context_length_of(model, tokenizer)
    loaded = LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        spec=loaded_spec.text,
        requested_spec=chosen.requested.text,
        device=torch_device,
        precision=precision,
        embed_dim=embed_dim(model),
        context_length=context_length,
        notice=chosen.notice,
        precision_note=precision_note,
        load_seconds=time.perf_counter() - start,
    )
    log.info("Loaded %s in %.1f s", loaded.description, loaded.load_seconds)
    return loaded


def context_length_of(model: torch.nn.Module, tokenizer=None) -> int:
    """Tokens per text: the tokenizer's, else the model's (SigLIP2's text tower takes 64, not CLIP's 77, and refuses
    any other length), else CLIP's 77."""
    return int(getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None) or 77)


def embed_dim(model: torch.nn.Module) -> int:
    """The size of a loaded model's embeddings: its text projection's output, else the image tower's, else a text
    forward at the model's own context length."""
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if output_dim:
        return int(output_dim)
    with torch.no_grad():
        tokens = torch.zeros(1, context_length_of(model), dtype=torch.long)
        return int(towers(model).encode_text(tokens).shape[-1])


def model_embed_dim(spec: str) -> int:
    """The embedding size of the model a spec names, without loading its weights when its open_clip config says
    (so an index can be created on a driver that never loads the model); hf-hub models are loaded on the CPU."""
    import open_clip

    parsed = parse_spec(spec)
    if parsed.kind != "hf-hub":
        register_model_configs()
        config = open_clip.get_model_config(parsed.name)
        if config and "embed_dim" in config:
            return int(config["embed_dim"])
    return load_model(spec, device="cpu", precision="fp32", allow_fallback=False).embed_dim
