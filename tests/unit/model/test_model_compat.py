"""Pre-0.2 import paths of the model layer and of renamed classification names keep working for one release, each
with a DeprecationWarning (clipapp/_compat.py), and resolve to the objects at their new homes."""

from __future__ import annotations

import importlib

import pytest

# old clipapp.models name -> the module that holds it now
MODELS_NAMES = {
    "DEFAULT_SPEC": "clipapp.model.spec",
    "DEMO_SPEC": "clipapp.model.spec",
    "DEMO_WEIGHTS": "clipapp.model.spec",
    "ModelSpec": "clipapp.model.spec",
    "parse_spec": "clipapp.model.spec",
    "default_spec": "clipapp.model.spec",
    "resolve_spec": "clipapp.model.spec",
    "register_model_configs": "clipapp.model.spec",
    "resolve_pretrained_weights": "clipapp.model.hub",
    "HUB_PROBE_SECONDS": "clipapp.model.hub",
    "load_model": "clipapp.model.loading",
    "LoadedModel": "clipapp.model.loading",
    "ClipTowers": "clipapp.model.loading",
    "towers": "clipapp.model.loading",
    "save_state_dict": "clipapp.model.checkpoint",
    "quantize_int8": "clipapp.model.quantize",
    "LinearSelfAttention": "clipapp.model.quantize",
    "PROBE_TEXTS": "clipapp.model.quantize",
}


@pytest.mark.parametrize("name, home", sorted(MODELS_NAMES.items()))
def test_old_models_names_still_import_with_a_warning(name, home):
    with pytest.warns(DeprecationWarning, match=rf"clipapp\.models\.{name} moved to {home}\.{name}"):
        old = getattr(importlib.import_module("clipapp.models"), name)
    assert old is getattr(importlib.import_module(home), name)


def test_from_clipapp_models_import_warns():
    with pytest.warns(DeprecationWarning, match="clipapp.models.load_model"):
        from clipapp.models import load_model  # noqa: F401


def test_distributed_model_embed_dim_moved_to_the_model_layer():
    from clipapp.model.loading import model_embed_dim

    with pytest.warns(DeprecationWarning, match="clipapp.model.loading.model_embed_dim"):
        from clipapp.distributed import model_embed_dim as old
    assert old is model_embed_dim


@pytest.mark.parametrize("old, new", [("Classifier", "LabelScorer"), ("predict", "predict_batches")])
def test_renamed_classify_names_still_import_with_a_warning(old, new):
    from clipapp.classify import stream

    with pytest.warns(DeprecationWarning, match=rf"clipapp\.classify\.stream\.{old} moved to .*\.{new}"):
        assert getattr(stream, old) is getattr(stream, new)
    with pytest.warns(DeprecationWarning):
        assert getattr(importlib.import_module("clipapp.classify"), old) is getattr(stream, new)  # the pre-0.2 module
    with pytest.raises(AttributeError):
        stream.no_such_name  # noqa: B018


def test_torch_dtype_is_gone():
    from clipapp.model import device

    assert not hasattr(device, "torch_dtype")
