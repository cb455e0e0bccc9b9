"""clipapp.tricks: optimisation helpers (SAM, EMA, early stopping, freezing, layer-wise lr, clipping)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipapp.errors import ClipAppError
from clipapp.tricks import (
    EarlyStopping,
    WeightEma,
    clip_gradients,
    freeze_by_pattern,
    layerwise_lr_groups,
    make_sam,
    sam_step,
    unfreeze_by_pattern,
)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.Linear(d, d)


class Transformer(nn.Module):
    def __init__(self, d, layers):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(d) for _ in range(layers))


class TinyTower(nn.Module):
    """Names like an open_clip tower: embeddings, transformer.resblocks.{i}, final norm, projection, head."""

    def __init__(self, d=6, layers=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, d, 2, bias=False)
        self.positional_embedding = nn.Parameter(torch.zeros(5, d))
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = Transformer(d, layers)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, 4))
        self.head = nn.Linear(4, 3)


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ---------------------------------------------------------------- SAM


def test_sam_takes_the_gradient_at_the_perturbed_point_and_applies_it_at_w():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    rho, lr = 0.5, 0.1
    w0 = [p.detach().clone() for p in model.parameters()]

    # the reference update, by hand: g at w0, e = rho g/|g|, g' at w0 + e, w1 = w0 - lr g'
    def grads_at(weights):
        ref = nn.Linear(3, 2)
        with torch.no_grad():
            for p, w in zip(ref.parameters(), weights, strict=False):
                p.copy_(w)
        F.cross_entropy(ref(x), y).backward()
        return [p.grad.clone() for p in ref.parameters()]

    g = grads_at(w0)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    w_perturbed = [w + rho * gi / norm for w, gi in zip(w0, g, strict=False)]
    g_sharp = grads_at(w_perturbed)
    expected = [w - lr * gs for w, gs in zip(w0, g_sharp, strict=False)]

    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer = make_sam(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    loss = sam_step(optimizer, closure)
    assert len(seen) == 2
    for a, b in zip(seen[0], w0, strict=False):
        assert torch.equal(a, b)  # first pass at w
    for a, b, w in zip(seen[1], w_perturbed, w0, strict=False):
        torch.testing.assert_close(a, b)  # second pass at w + e(w)...
        assert not torch.allclose(a, w)  # ...which is not w
    for p, e, w in zip(model.parameters(), expected, w0, strict=False):
        torch.testing.assert_close(p.detach(), e)  # restored to w, stepped with the sharp gradient
        assert not torch.allclose(p.detach(), w)
    # it is not plain SGD: the plain step would use g, not g'
    assert not torch.allclose(expected[0], w0[0] - lr * g[0])
    assert loss.item() == pytest.approx(F.cross_entropy(nn.functional.linear(x, w0[0], w0[1]), y).item())
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_sam_keeps_batchnorm_running_stats_from_the_second_pass():
    model = tiny_net()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    optimizer = make_sam(model.parameters(), torch.optim.SGD, lr=0.1)
    reference = tiny_net()
    reference.train()
    reference(x)  # one forward pass worth of running-stat update

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    sam_step(optimizer, closure, model=model)
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
    assert model[1].momentum == reference[1].momentum


# ---------------------------------------------------------------- EMA


def test_ema_apply_and_restore_round_trip():
    model = tiny_net()
    ema = WeightEma(model, decay=0.5, warmup=False)
    expected = None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _step in range(4):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        ema.update(model)
        current = model.state_dict()
        if expected is None:  # the first update copies the model
            expected = {k: v.clone() for k, v in current.items()}
        else:
            expected = {
                k: (0.5 * expected[k] + 0.5 * v) if v.is_floating_point() else v.clone() for k, v in current.items()
            }
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    param_ids = [id(p) for p in model.parameters()]
    with ema.apply_to(model) as applied:
        assert applied is model
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, expected[k])
        assert not torch.equal(model[0].weight, originals["0.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, originals[k])  # bit-exact restore
    assert [id(p) for p in model.parameters()] == param_ids  # the optimizer still holds the same tensors


def test_ema_restores_even_when_evaluation_fails():
    model = tiny_net()
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = model[0].weight.clone()
    with pytest.raises(RuntimeError):
        with ema.apply_to(model):
            raise RuntimeError("eval crashed")
    assert torch.equal(model[0].weight, before)


def test_ema_warmup_ramps_decay():
    ema = WeightEma(tiny_net(), decay=0.99, warmup=True)
    decays = []
    for _ in range(50):
        ema.update(tiny_net())
        decays.append(ema.decay)
    assert decays[0] == 0.0 and decays[1] < decays[10] < decays[-1] <= 0.99


# ---------------------------------------------------------------- early stopping


def test_early_stopping_stops_after_patience_and_restores_the_best_exactly():
    model = tiny_net()
    stopper = EarlyStopping(patience=3, mode="max", min_delta=0.01)
    scores = [0.50, 0.60, 0.605, 0.55, 0.59]  # best at index 1; 0.605 is within min_delta
    stops = []
    best_weights = None
    for epoch, score in enumerate(scores):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        if epoch == 1:
            best_weights = {k: v.clone() for k, v in model.state_dict().items()}
        stops.append(stopper.step(score, model))
    assert stops == [False, False, False, False, True]
    assert stopper.best == 0.60 and stopper.best_step == 1 and stopper.num_bad_steps == 3
    stopper.restore(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best_weights[k])


def test_early_stopping_min_mode_and_nan():
    stopper = EarlyStopping(patience=2, mode="min")
    assert not stopper(1.0)
    assert not stopper(float("nan"))
    assert not stopper(0.5)  # improvement resets the count
    assert not stopper(0.7)
    assert stopper(0.6)
    with pytest.raises(ClipAppError):
        EarlyStopping(patience=2, mode="best")


# ---------------------------------------------------------------- freezing


def test_frozen_parameters_get_no_gradient_and_do_not_move():
    model = TinyTower()
    n = freeze_by_pattern(model, ["conv1.*", "positional_embedding", "transformer.resblocks.[01].*"])
    assert n == 1 + 1 + 2 * 4
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    blocks = {f"transformer.resblocks.{i}.{m}.{t}" for i in (0, 1) for m in ("ln", "mlp") for t in ("weight", "bias")}
    assert frozen == {"conv1.weight", "positional_embedding"} | blocks
    before = params_of(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        # every parameter, frozen ones included, takes part in the graph
        out = model.conv1(torch.randn(2, 3, 3, 3)).sum() + model.positional_embedding.sum()
        out = out + model.ln_pre(torch.randn(2, 6)).sum()
        for block in model.transformer.resblocks:
            out = out + block.mlp(block.ln(torch.randn(2, 6))).sum()
        (out + model.head(model.ln_post(torch.randn(2, 6)) @ model.proj).sum()).backward()
        for name, p in model.named_parameters():
            assert (p.grad is None) == (name in frozen), name
        optimizer.step()
    after = params_of(model)
    for name in before:
        assert torch.equal(before[name], after[name]) == (name in frozen), name


def test_freezing_after_backward_drops_the_stale_gradient():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(4, 3)).sum().backward()
    assert freeze_by_pattern(model, ["0.*"]) == 2
    before = model[0].weight.detach().clone()
    optimizer.step()
    assert model[0].weight.grad is None and torch.equal(model[0].weight, before)


def test_freeze_regex_exclude_strict_and_unfreeze():
    model = TinyTower()
    n = freeze_by_pattern(model, [r"resblocks\.\d+\."], regex=True, exclude=[r"resblocks\.3\."])
    assert n == 3 * 4
    assert all(p.requires_grad for p in model.transformer.resblocks[3].parameters())
    with pytest.raises(ClipAppError, match="visul"):
        freeze_by_pattern(model, ["visul.*"])
    assert unfreeze_by_pattern(model, [re.compile(r"resblocks\.2\.")]) == 4
    assert sum(not p.requires_grad for p in model.parameters()) == 8


# ---------------------------------------------------------------- layer-wise lr


def test_layerwise_groups_cover_trainable_parameters_once_with_decreasing_lr():
    model = TinyTower(layers=4)
    freeze_by_pattern(model, ["transformer.resblocks.0.mlp.*"])
    groups = layerwise_lr_groups(model, base_lr=1.0, decay=0.5, weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(ids) == len(set(ids))  # all of them, each once

    lr_of = {name: g["lr"] for g in groups for name in g["param_names"]}
    assert "transformer.resblocks.0.mlp.weight" not in lr_of
    block_lr = [lr_of[f"transformer.resblocks.{i}.mlp.bias"] for i in range(1, 4)]
    assert block_lr == [0.5**3, 0.5**2, 0.5**1]  # depth from the top: block 3 is one below the head
    assert lr_of["transformer.resblocks.0.ln.weight"] == 0.5**4
    for name in ("conv1.weight", "positional_embedding", "ln_pre.weight", "ln_pre.bias"):
        assert lr_of[name] == 0.5**5  # embeddings: lowest
    for name in ("ln_post.weight", "proj", "head.weight", "head.bias"):
        assert lr_of[name] == 1.0  # top
    assert min(lr_of.values()) == 0.5**5

    wd_of = {name: g["weight_decay"] for g in groups for name in g["param_names"]}
    assert wd_of["head.weight"] == 0.1 and wd_of["head.bias"] == 0.0 and wd_of["ln_post.weight"] == 0.0
    optimizer = torch.optim.AdamW(groups)  # torch accepts the groups as they are
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


def test_layerwise_groups_count_each_tower_separately():
    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = TinyTower(layers=4)
            self.transformer = Transformer(6, 2)
            self.logit_scale = nn.Parameter(torch.ones([]))

    groups = layerwise_lr_groups(TwoTowers(), base_lr=1.0, decay=0.5)
    lr_of = {name: g["lr"] for g in groups for name in g["param_names"]}
    assert lr_of["visual.transformer.resblocks.3.ln.weight"] == 0.5
    assert lr_of["transformer.resblocks.1.ln.weight"] == 0.5  # top of the 2-block text stack
    assert lr_of["transformer.resblocks.0.ln.weight"] == 0.25
    assert lr_of["logit_scale"] == 1.0


# ---------------------------------------------------------------- clipping


def test_clip_gradients_returns_the_norm_before_and_clips_to_max():
    model = nn.Linear(4, 4)
    (model(torch.randn(3, 4)) * 100).sum().backward()
    before = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
    assert clip_gradients(model, None) == pytest.approx(before, rel=1e-5)  # measuring only
    assert clip_gradients(model, 1.0) == pytest.approx(before, rel=1e-5)
    after = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
    assert after == pytest.approx(1.0, rel=1e-4) and before > 1.0
