"""Tower surgery (clipapp.finetune.towers): the visual tower split at a block, copies with tuned weights."""

from __future__ import annotations

import importlib
import warnings

import open_clip
import pytest
import torch

from clipapp.errors import ClipAppError
from clipapp.finetune import towers
from tests.support.paths import TINY_MODEL


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return open_clip.create_model(TINY_MODEL).eval()


def test_prefix_then_suffix_is_the_whole_tower(model):
    visual = model.visual
    assert towers.visual_kind(visual) == "vit"
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        whole = visual(pixels)
        for first in range(len(towers.visual_blocks(visual))):
            split = towers.visual_suffix(visual, towers.visual_prefix(visual, pixels, first), first)
            torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_tuned_copy_trains_only_the_top_and_leaves_the_resident_tower_alone(model):
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    copy, first, names = towers.tuned_visual_copy(model, 1)
    assert first == len(towers.visual_blocks(model.visual)) - 1
    assert names and all(n.startswith(("transformer.resblocks.1.", "ln_post", "proj")) for n in names)
    for p in copy.parameters():
        p.data.add_(1.0)
    for k, v in model.visual.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ClipAppError, match="between 1 and 2"):
        towers.check_partial_visual(model.visual, 3)


def test_tower_with_weights_and_unfit_weights(model):
    weights = {"proj": torch.zeros_like(model.visual.proj)}
    tuned = towers.tower_with_weights(model.visual, weights)
    assert torch.equal(tuned.proj, torch.zeros_like(model.visual.proj))
    assert not any(p.requires_grad for p in tuned.parameters())
    assert not torch.equal(model.visual.proj, tuned.proj)
    assert towers.unfit_weights(model.visual, weights) == []
    bad = {"proj": torch.zeros(2, 2), "no.such.weight": torch.zeros(1)}
    assert towers.unfit_weights(model.visual, bad) == ["proj", "no.such.weight"]


def test_old_adapter_path_still_finds_the_tower_functions():
    old = importlib.import_module("clipapp.adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old.visual_prefix is towers.visual_prefix
        assert old.load_adapter is importlib.import_module("clipapp.finetune.adapter").load_adapter
    assert all(issubclass(w.category, DeprecationWarning) for w in caught) and len(caught) == 2


def test_trainable_models_keep_their_old_names_for_one_release():
    import clipapp.finetune as package
    from clipapp.finetune import trainable

    for old, new in (("HeadClassifier", trainable.TrainableHead), ("PartialClassifier", trainable.PartialTower)):
        for module in (trainable, package, package):  # the package warns on every lookup, not just the first
            with pytest.warns(DeprecationWarning, match=f"{old} moved to clipapp.finetune.trainable.{new.__name__}"):
                assert getattr(module, old) is new
    with pytest.raises(AttributeError):
        trainable.NoSuchModel  # noqa: B018


def test_old_selection_module_answers_from_model_choice():
    from clipapp.finetune import model_choice

    old = importlib.import_module("clipapp.finetune.selection")
    with pytest.warns(DeprecationWarning, match="model_choice"):
        assert old.wise_blend is model_choice.wise_blend
