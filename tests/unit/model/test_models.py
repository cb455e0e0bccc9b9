"""Model specs, safe checkpoint loading and the offline fallback."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from clipapp.errors import ClipAppError, ModelLoadError
from clipapp.model.device import select_device, select_precision
from clipapp.model.loading import load_model
from clipapp.model.spec import DEFAULT_SPEC, parse_spec
from tests.support.paths import TINY_MODEL


@pytest.mark.parametrize(
    "spec, kind",
    [
        ("demo", "demo"),
        ("ViT-B-32:laion2b_s34b_b79k", "pretrained"),
        ("ViT-B-32:/tmp/weights.safetensors", "file"),
        ("ViT-B-32:random", "random"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub"),
    ],
)
def test_parse_spec_kinds(spec, kind):
    assert parse_spec(spec).kind == kind


@pytest.mark.parametrize("spec", ["nonsense", "NoSuchNet:random", "ViT-B-32:no_such_tag", "hf-hub:"])
def test_bad_specs_are_clear_errors(spec):
    with pytest.raises(ModelLoadError):
        parse_spec(spec)


def test_env_variable_sets_default(monkeypatch):
    monkeypatch.setenv("CLIPAPP_MODEL", "demo")
    assert parse_spec(None).kind == "demo"
    monkeypatch.delenv("CLIPAPP_MODEL")
    assert parse_spec(None).text == DEFAULT_SPEC


def test_offline_default_falls_back_to_demo_quickly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    loaded = load_model(DEFAULT_SPEC, device="cpu")
    elapsed = time.perf_counter() - start
    assert loaded.spec == "demo"
    assert loaded.requested_spec == DEFAULT_SPEC
    assert "demo model instead of" in loaded.notice and "offline" in loaded.notice
    assert "demo model" in loaded.description
    print(f"fallback took {elapsed:.2f} s")


def test_fallback_can_be_refused(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        load_model(DEFAULT_SPEC, device="cpu", allow_fallback=False)


def test_missing_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelLoadError, match="nope.safetensors"):
        load_model(f"{TINY_MODEL}:{missing}", device="cpu")


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="corrupt.safetensors"):
        load_model(f"{TINY_MODEL}:{corrupt}", device="cpu")


def test_pickled_checkpoint_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(ModelLoadError, match="evil.pt"):
        load_model(f"{TINY_MODEL}:{path}", device="cpu")


def test_local_file_spec_loads_the_saved_weights(tiny_weights, tiny_spec):
    from safetensors.torch import load_file

    loaded = load_model(tiny_spec, device="cpu", precision="fp32")
    saved = load_file(str(tiny_weights))
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert loaded.spec == tiny_spec and loaded.notice is None
    assert not loaded.model.training


def test_device_and_precision_choice():
    assert select_device("cpu").type == "cpu"
    assert select_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ClipAppError):
        select_device("tpu")
    with pytest.raises(ClipAppError):
        select_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ClipAppError, match="no CUDA"):
            select_device("cuda")
        assert select_device("auto").type == "cpu"


def test_int8_quantizes_linears_and_keeps_embeddings(tiny_spec, photos):
    from clipapp.model.service import ClipService

    fp32 = ClipService.load(tiny_spec, device="cpu", precision="fp32", micro_batch_window_s=0)
    int8 = ClipService.load(tiny_spec, device="cpu", precision="int8", micro_batch_window_s=0)
    assert int8.loaded.precision == "int8"
    assert any(hasattr(m, "_packed_params") for m in int8.model.modules())
    cosine = (fp32.encode_images(photos) * int8.encode_images(photos)).sum(axis=1)
    assert cosine.min() >= 0.99
    text_cosine = (fp32.encode_texts(["a cat", "a rocket"]) * int8.encode_texts(["a cat", "a rocket"])).sum(axis=1)
    assert text_cosine.min() >= 0.99
    assert int8.trainable_model() is not int8.model  # an fp32 copy for fine-tuning
    assert not any(hasattr(m, "_packed_params") for m in int8.trainable_model().modules())


def test_auto_precision_on_cpu_is_exact_fp32(tiny_spec, photos):
    """auto gives open_clip's own numbers on a CPU: fp32, no quantized layer, the same embeddings as fp32."""
    from clipapp.model.service import ClipService

    auto = ClipService.load(tiny_spec, device="cpu", micro_batch_window_s=0)
    fp32 = ClipService.load(tiny_spec, device="cpu", precision="fp32", micro_batch_window_s=0)
    assert auto.loaded.precision == "fp32" and "auto" in auto.description
    assert not any(hasattr(m, "_packed_params") for m in auto.model.modules())
    np.testing.assert_array_equal(auto.encode_images(photos), fp32.encode_images(photos))
    int8 = load_model(tiny_spec, device="cpu", precision="int8")  # only when asked, with its measured cost
    assert int8.precision == "int8" and "cosine" in int8.precision_note


def test_linear_self_attention_is_an_exact_swap(tiny_spec):
    """The int8 path rewrites attention so its projections can be quantized; in fp32 nothing may change."""
    import copy

    from clipapp.model.quantize import LinearSelfAttention, _with_linear_self_attention

    model = load_model(tiny_spec, device="cpu", precision="fp32")
    swapped = _with_linear_self_attention(copy.deepcopy(model.model))
    assert sum(isinstance(m, LinearSelfAttention) for m in swapped.modules()) == 4  # 2 visual + 2 text blocks
    pixels = torch.randn(3, 3, 32, 32)
    tokens = model.tokenizer(["a photo of a cat", "x"])
    with torch.no_grad():
        torch.testing.assert_close(swapped.encode_image(pixels), model.model.encode_image(pixels), atol=1e-5, rtol=0)
        torch.testing.assert_close(swapped.encode_text(tokens), model.model.encode_text(tokens), atol=1e-5, rtol=0)


def test_auto_on_a_gpu_is_fp16_autocast_over_fp32_weights(tiny_spec, photos):
    """As open_clip's zero-shot evaluation runs: weights stay fp32, forward passes run under autocast."""
    from clipapp.model.service import ClipService

    assert select_precision("auto", torch.device("cuda")) == "amp"  # the choice itself needs no GPU
    with pytest.raises(ClipAppError, match="GPU"):
        select_precision("amp", torch.device("cpu"))
    # The autocast path, exercised on the CPU (where autocast computes in bf16): fp32 weights, close embeddings.
    loaded = load_model(tiny_spec, device="cpu", precision="fp32")
    loaded.precision = "amp"
    amp = ClipService(loaded, micro_batch_window_s=0)
    assert next(amp.model.parameters()).dtype == torch.float32
    reference = ClipService.load(tiny_spec, device="cpu", precision="fp32", micro_batch_window_s=0)
    amp_vectors, fp32_vectors = amp.encode_images(photos), reference.encode_images(photos)
    assert amp_vectors.dtype == np.float32 and not np.array_equal(amp_vectors, fp32_vectors)  # autocast did run
    assert (amp_vectors * fp32_vectors).sum(axis=1).min() > 0.99
    assert (amp.encode_texts(["a cat"]) * reference.encode_texts(["a cat"])).sum() > 0.99


@pytest.mark.parametrize("spec", ["demo", "tiny"])
def test_bf16_on_the_cpu_encodes_close_to_fp32(spec, tiny_spec, photos):
    """open_clip's bf16 leaves norms in fp32 (the demo ResNet's BatchNorm fed float32 into bf16 convolutions and
    failed with "expected scalar type Float"): the service runs bf16 models under autocast."""
    from clipapp.model.service import ClipService

    spec = tiny_spec if spec == "tiny" else spec
    bf16 = ClipService.load(spec, device="cpu", precision="bf16", micro_batch_window_s=0)
    fp32 = ClipService.load(spec, device="cpu", precision="fp32", micro_batch_window_s=0)
    assert any(p.dtype == torch.bfloat16 for p in bf16.model.parameters())  # open_clip cast the weights it casts
    bf16_vectors, fp32_vectors = bf16.encode_images(photos), fp32.encode_images(photos)
    assert bf16_vectors.dtype == np.float32 and (bf16_vectors * fp32_vectors).sum(axis=1).min() > 0.98
    assert (bf16.encode_texts(["a cat"]) * fp32.encode_texts(["a cat"])).sum() > 0.98


def test_the_demo_fallback_is_decided_once_for_resolve_spec_and_load_model(monkeypatch):
    """resolve_spec (what Ray workers are told) and load_model ask the same `choose`, so they agree."""
    from clipapp.model.spec import choose, resolve_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    chosen = choose(DEFAULT_SPEC)
    assert chosen.load.text == "demo" and chosen.requested.text == DEFAULT_SPEC and "offline" in chosen.notice
    assert resolve_spec(DEFAULT_SPEC) == "demo" == load_model(DEFAULT_SPEC, device="cpu").spec
    assert resolve_spec(DEFAULT_SPEC, allow_fallback=False) == DEFAULT_SPEC  # not probed: loading says
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        choose(DEFAULT_SPEC, allow_fallback=False)
    assert choose("demo").notice is None


def test_embed_dim_of_a_spec_matches_the_loaded_model(tiny_spec):
    from clipapp.model.loading import embed_dim, model_embed_dim

    loaded = load_model(tiny_spec, device="cpu", precision="fp32")
    assert model_embed_dim(tiny_spec) == loaded.embed_dim == embed_dim(loaded.model) == 32
