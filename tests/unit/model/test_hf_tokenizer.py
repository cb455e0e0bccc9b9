"""Models whose open_clip config names a Hugging Face tokenizer (SigLIP / SigLIP2, the multilingual models) load
through the `hf` extra and classify, offline: the tokenizer here is one the test builds with `tokenizers` and
saves to a folder that the model config names by path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipapp.errors import ModelLoadError
from clipapp.model.loading import hugging_face_parts
from clipapp.model.service import ClipService
from clipapp.model.spec import register_model_configs

pytest.importorskip("transformers")  # the hf extra; tests/integration/test_dependencies.py covers its absence

WORDS = ["[PAD]", "[UNK]", "a", "photo", "of", "the", "shirt", "shoe", "bag", "dress", "red", "blue"]


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory) -> str:
    """A tiny open_clip config (tests/data/clipapp-tiny.json's towers) whose text tower reads a WordLevel
    tokenizer from a local folder; returns the model's name."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hf-tiny")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        root / "tokenizer"
    )
    config = {
        "embed_dim": 32,
        "custom_text": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": len(WORDS),
            "hf_tokenizer_name": str(root / "tokenizer"),
            "width": 32,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "pool_type": "last",
            "pad_id": 0,
        },
    }
    (root / "configs").mkdir()
    (root / "configs" / "clipapp-tiny-hf.json").write_text(json.dumps(config))
    register_model_configs(root / "configs")
    return "clipapp-tiny-hf"


def test_a_model_with_a_local_hf_tokenizer_loads_and_classifies(hf_tiny, photos):
    service = ClipService.load(f"{hf_tiny}:random", device="cpu", precision="fp32")
    tokens = service.tokenizer(["a photo of a red shirt", "a photo of a zebra"])
    # the test's own vocabulary, not open_clip's BPE (49408 ids): "zebra" is unknown
    assert tokens.shape == (2, 16)
    assert tokens[0, :6].tolist() == [WORDS.index(w) for w in "a photo of a red shirt".split()]
    assert WORDS.index("[UNK]") in tokens[1].tolist()
    result = service.zero_shot(photos[:3], ["shirt", "shoe", "bag"])
    assert result.probs.shape == (3, 3)
    assert np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    # different texts give different embeddings: the tokenizer's ids reach the text tower
    texts = service.encode_texts(["red shirt", "blue dress"])
    assert not np.allclose(texts[0], texts[1])


def test_a_tokenizer_that_cannot_be_had_offline_is_one_line(hf_tiny, tmp_path):
    """The hub is off in the tests (HF_HUB_OFFLINE=1): a tokenizer neither on disk nor cached is a ModelLoadError of
    one line saying what to do, raised before the model is built."""
    config = json.loads(json.dumps(open_clip_config(hf_tiny)))
    config["text_cfg"]["hf_tokenizer_name"] = "clipapp-tests/no-such-tokenizer"
    (tmp_path / "clipapp-tiny-hf-missing.json").write_text(json.dumps(config))
    register_model_configs(tmp_path)
    with pytest.raises(ModelLoadError, match="connect to the internet once") as caught:
        ClipService.load("clipapp-tiny-hf-missing:random", device="cpu")
    assert "\n" not in str(caught.value) and "no-such-tokenizer" in str(caught.value)


def open_clip_config(name: str) -> dict:
    import open_clip

    return open_clip.get_model_config(name)


def test_which_models_need_transformers(hf_tiny):
    assert "Hugging Face tokenizer" in (hugging_face_parts("ViT-B-16-SigLIP2") or "")
    assert "Hugging Face text tower" in (hugging_face_parts("xlm-roberta-base-ViT-B-32") or "")
    assert "Hugging Face tokenizer" in (hugging_face_parts(hf_tiny) or "")
    assert hugging_face_parts("ViT-B-32") is None
    assert hugging_face_parts("clipapp-tiny") is None


def test_a_siglip2_shaped_model_with_a_short_context_loads(hf_tiny, tmp_path, photos):
    """SigLIP2's towers in small: a timm image tower with no output_dim and a text context of 16, not CLIP's 77
    (ViT-B-16-SigLIP2's is 64): its embedding size is read through its own context length."""
    config = json.loads(json.dumps(open_clip_config("ViT-B-16-SigLIP2")))
    config["embed_dim"] = 192  # vit_tiny's width: SigLIP2's image tower has no projection (timm_proj none)
    config["vision_cfg"] = {**config["vision_cfg"], "timm_model_name": "vit_tiny_patch16_224"}  # 5.5M parameters
    text = open_clip_config(hf_tiny)["text_cfg"]
    config["text_cfg"].update(
        context_length=16,
        vocab_size=text["vocab_size"],
        hf_tokenizer_name=text["hf_tokenizer_name"],
        width=32,
        heads=2,
        layers=2,
    )
    config["text_cfg"].pop("tokenizer_kwargs")
    (tmp_path / "clipapp-tiny-siglip2.json").write_text(json.dumps(config))
    register_model_configs(tmp_path)
    service = ClipService.load("clipapp-tiny-siglip2:random", device="cpu", precision="fp32")
    assert service.multi_label  # a learnt logit bias: independent sigmoids, as SigLIP's authors use them
    result = service.zero_shot(photos[:2], ["shirt", "shoe"])
    assert result.probs.shape == (2, 2)
    int8 = ClipService.load("clipapp-tiny-siglip2:random", device="cpu", precision="int8")  # its Linear projection
    assert int8.zero_shot(photos[:2], ["shirt", "shoe"]).probs.shape == (2, 2)
