"""Dynamic int8 quantization of a loaded model (CPU only, `--precision int8`), with what it costs: the lowest cosine
to the fp32 embeddings of a few probe inputs and the speed-up on them. Self-attention is rewritten first
(`LinearSelfAttention`) so its projections are quantized too."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from clipapp.model.loading import towers

PROBE_IMAGES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples" / "photos"  # a checkout only
PROBE_TEXTS = ("a photo of a cat.", "a photo of a rocket.", "a page of printed text.", "a red sneaker.")


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
            if type(module) is torch.nn.Linear
            and name.rpartition(".")[0] not in skip_parents
            # a text tower with a projection bias (SigLIP2) applies it only while isinstance(nn.Linear), else `@`
            and not name.endswith("text_projection")
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
