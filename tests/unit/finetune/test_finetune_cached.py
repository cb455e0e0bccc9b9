"""Partial fine-tuning on cached activations: the same logits as the uncached path without augmentation, every
default trick really applied to the cached activations, augmented views, the ViT token grid, the thread choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipapp.finetune import FinetuneConfig, TokenGrid, encode_labelled, finetune, labelled_uploads, prepare_training
from clipapp.finetune import features as features_module
from clipapp.finetune.loop import fastest_threads
from clipapp.model.service import ClipService
from clipapp.tricks import WeightEma, cutmix, mixing
from tests.support.colour_images import colour_images

# Cached and uncached paths differ only in float summation order (the frozen part runs on batches of 64 once,
# or on each training batch): after a few epochs the logits agree to this.
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def demo_service():
    """The bundled ModifiedResNet demo model (the tiny test model is a ViT): both tower kinds are covered."""
    return ClipService.load("demo", device="cpu", precision="fp32", allow_fallback=False)


@pytest.fixture(params=["vit", "resnet"])
def service(request, tiny_service, demo_service):
    return tiny_service if request.param == "vit" else demo_service


@pytest.fixture(scope="module")
def colours():
    return labelled_uploads(colour_images(6))


def test_cached_activations_give_the_uncached_logits_without_augmentation(service, colours):
    base = dict(
        mode="partial",
        blocks=2,
        epochs=3,
        max_folds=2,
        visual_lr=1e-3,
        mixup=0.0,
        cutmix=0.0,
        views=1,
        wise_alpha=1.0,
        require_gain=False,
        seed=3,
    )
    cached = finetune(service, colours, FinetuneConfig(**base))
    uncached = finetune(service, colours, FinetuneConfig(**base, mix_space="pixels"))
    images = [image for image, _ in colour_images(2, seed=7)]
    features = cached.adapter.image_features(service, images)
    logits = cached.adapter.logits_from_features(features)
    reference = uncached.adapter.logits_from_features(uncached.adapter.image_features(service, images))
    np.testing.assert_allclose(logits, reference, atol=LOGIT_TOLERANCE, rtol=LOGIT_TOLERANCE)
    np.testing.assert_allclose(cached.history["val_loss"], uncached.history["val_loss"], atol=LOGIT_TOLERANCE)
    # and training moved the model: equal logits are not just two copies of zero-shot
    zero_shot = (
        service.logit_scale
        * service.encode_images(images)
        @ service.text_embeddings(list(colours.class_names), "simple").T
    )
    assert np.abs(logits - zero_shot).max() > 100 * LOGIT_TOLERANCE


def test_every_default_trick_acts_on_the_cached_activations(service, colours, monkeypatch):
    config = FinetuneConfig(mode="partial", epochs=2, max_folds=2)  # the default tricks, in partial mode
    assert config.mixup > 0 and config.label_smoothing > 0 and config.ema > 0
    calls: dict[str, list] = {"mixup": [], "cutmix": [], "ema": [], "prefix": [], "views": []}

    def spy(name, real):
        def wrapper(x, target, **kwargs):
            calls[name].append((tuple(x.shape), kwargs["smoothing"]))
            return real(x, target, **kwargs)

        return wrapper

    monkeypatch.setattr(mixing, "mixup", spy("mixup", mixing.mixup))
    monkeypatch.setattr(mixing, "cutmix", spy("cutmix", mixing.cutmix))
    real_update, real_prepare = WeightEma.update, features_module.prepare_training
    monkeypatch.setattr(WeightEma, "update", lambda self, model: (calls["ema"].append(1), real_update(self, model)))

    def prepare(*args, **kwargs):
        setup = real_prepare(*args, **kwargs)
        calls["views"].append(setup.inputs.views.shape)
        return setup

    monkeypatch.setattr("clipapp.finetune.run.prepare_training", prepare)
    monkeypatch.setattr(
        "clipapp.finetune.trainable.PartialTower.prefix", lambda self, pixels: calls["prefix"].append(1)
    )
    finetune(service, colours, config)

    (views_shape,) = calls["views"]
    assert views_shape[0] == config.views and len(views_shape) >= 4  # (views, n, C, H, W) maps or (views, n, L, D)
    mixed = calls["mixup"] + calls["cutmix"]
    assert calls["mixup"], "mixup was skipped"
    if config.cutmix > 0:
        assert calls["cutmix"], "CutMix was skipped"
    pixel_shape = (3, service.input_side, service.input_side)
    for shape, smoothing in mixed:
        assert len(shape) == 4 and shape[1:] != pixel_shape  # activation maps / the token grid, never pixels
        assert smoothing == config.label_smoothing
    assert len(calls["ema"]) >= len(mixed) > 0  # EMA after every step
    assert not calls["prefix"]  # the frozen part never ran during training


def test_views_are_cached_once_and_bounded_by_memory(demo_service, colours, monkeypatch):
    encoded = encode_labelled(demo_service, colours)
    start = demo_service.text_embeddings(list(colours.class_names), "simple")
    setup = prepare_training(demo_service, encoded, FinetuneConfig(mode="partial", views=3), start)
    views = setup.inputs.views
    assert views.shape[:2] == (3, len(encoded.targets))
    plain = prepare_training(demo_service, encoded, FinetuneConfig(mode="partial", views=1), start).inputs.views
    torch.testing.assert_close(views[0], plain[0])  # view 0 is the image itself
    assert not torch.allclose(views[1], views[0]) and not torch.allclose(views[2], views[1])
    monkeypatch.setattr(features_module, "CACHE_BYTES", 2 * views[0].numel() * views.element_size())
    result = finetune(demo_service, colours, FinetuneConfig(mode="partial", views=4, epochs=1, max_folds=2))
    assert any("Cached 2 views per image, not 4" in note for note in result.notes)


def test_token_grid_cutmix_pastes_patch_tokens_and_blends_the_class_token():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 class token + a 2 x 2 grid, width 3
    grid = TokenGrid(prefix=1, height=2, width=2)
    mixed = grid.mix(lambda maps, y: cutmix(maps, y, num_classes=2, lam=0.5, rng=1), tokens, torch.tensor([0, 1]))
    partner = mixed.index
    y0, y1, x0, x1 = mixed.box
    pasted = {1 + r * 2 + c for r in range(y0, y1) for c in range(x0, x1)}
    assert 0 < len(pasted) < 4
    for i in range(2):
        for t in range(1, 5):
            source = partner[i] if t in pasted else i
            torch.testing.assert_close(mixed.inputs[i, t], tokens[source, t])
        blended = mixed.lam * tokens[i, 0] + (1 - mixed.lam) * tokens[partner[i], 0]
        torch.testing.assert_close(mixed.inputs[i, 0], blended)
    assert mixed.lam == pytest.approx(1 - len(pasted) / 4)


def test_thread_choice_leaves_the_model_as_it_was(demo_service, colours):
    encoded = encode_labelled(demo_service, colours)
    start = demo_service.text_embeddings(list(colours.class_names), "simple")
    setup = prepare_training(demo_service, encoded, FinetuneConfig(mode="partial"), start)
    model = setup.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    chosen = fastest_threads(model, setup.inputs, demo_service.device, batch_size=8)
    assert chosen in (1, threads) and torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bf16_tuned_blocks_stay_close_to_fp32_and_the_head_computes_in_fp32(service):
    """Mixed precision: the tuned blocks under bf16 autocast, their features and the head's logits back in fp32."""
    from clipapp.finetune.towers import tuned_visual_copy
    from clipapp.finetune.trainable import PartialTower, TrainableHead

    visual, first, _ = tuned_visual_copy(service.trainable_model(), 2)
    pixels = torch.stack([service.preprocess(image) for image, _ in colour_images(2, seed=5)])
    tokens = features_module.prefix_tokens(visual, first, [pixels])
    head = TrainableHead(torch.eye(4, service.embed_dim), service.logit_scale)
    exact, mixed = (PartialTower(visual, first, head, dtype).eval() for dtype in (torch.float32, torch.bfloat16))
    with torch.no_grad():
        reference, features = exact.features(tokens), mixed.features(tokens)
        logits = mixed(tokens)
    assert features.dtype == logits.dtype == torch.float32
    assert not torch.equal(features, reference)  # bf16 really ran
    cosine = torch.nn.functional.cosine_similarity(features, reference, dim=-1)
    assert cosine.min() > 0.99


def test_a_conv_tower_trains_channels_last_and_splits_to_the_same_embeddings(demo_service):
    from clipapp.finetune.towers import tuned_visual_copy, visual_prefix, visual_suffix

    visual, first, _ = tuned_visual_copy(demo_service.trainable_model(), 2)
    assert visual.get_submodule("layer4.0.conv1").weight.is_contiguous(memory_format=torch.channels_last)
    pixels = torch.stack([demo_service.preprocess(image) for image, _ in colour_images(2, seed=5)])
    with torch.no_grad():
        split = visual_suffix(visual, visual_prefix(visual, pixels, first), first)
        whole = demo_service.trainable_model().get_submodule("visual").float()(pixels)
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-4)
