"""clipapp.tricks: mixing and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipapp.tricks import (
    ClassBalancedLoss,
    FocalLoss,
    MixupCutmix,
    class_balanced_weights,
    cutmix,
    focal_loss,
    mixup,
    soft_targets,
)

K = 5


def distinct_images(n=6, c=3, h=16, w=20):
    # image i is filled with the value i + 1, so every pixel tells which image it came from
    return torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, c, h, w).clone()


# ---------------------------------------------------------------- mixing


@pytest.mark.parametrize("shape", [(7, 3, 8, 8), (7, 32)])  # images and cached features, odd batch
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_targets_are_the_lambda_blend_and_sum_to_one(shape, smoothing):
    x, y = torch.randn(shape), torch.randint(0, K, (shape[0],))
    out = mixup(x, y, num_classes=K, alpha=0.4, smoothing=smoothing, rng=3)
    assert 0.0 <= out.lam <= 1.0 and out.lam not in (0.0, 1.0)
    y_a = soft_targets(y, K, smoothing=smoothing)
    torch.testing.assert_close(out.targets, out.lam * y_a + (1 - out.lam) * y_a[out.index])
    torch.testing.assert_close(out.targets.sum(1), torch.ones(shape[0]))
    torch.testing.assert_close(out.inputs, out.lam * x + (1 - out.lam) * x[out.index])
    if smoothing:
        assert out.targets.min() >= smoothing / K - 1e-7


def test_mixup_does_not_touch_its_input_and_is_seeded():
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    before = x.clone()
    a = mixup(x, y, num_classes=K, rng=0)
    b = mixup(x, y, num_classes=K, rng=0)
    assert torch.equal(x, before)
    assert a.lam == b.lam and torch.equal(a.index, b.index)


def test_cutmix_lambda_is_the_pasted_pixel_fraction():
    x = distinct_images()
    y = torch.arange(6) % K
    checked = 0
    for seed in range(20):  # many boxes, including ones clipped at the border
        out = cutmix(x, y, num_classes=K, alpha=1.0, rng=seed)
        h, w = x.shape[-2:]
        for i, j in enumerate(out.index.tolist()):
            if i == j:
                continue
            pasted = (out.inputs[i] == j + 1).all(0)  # pixels now showing the partner image
            kept = (out.inputs[i] == i + 1).all(0)
            assert int(pasted.sum()) + int(kept.sum()) == h * w
            assert out.lam == pytest.approx(1 - pasted.sum().item() / (h * w))
            checked += 1
        y_a = soft_targets(y, K)
        torch.testing.assert_close(out.targets, out.lam * y_a + (1 - out.lam) * y_a[out.index])
        torch.testing.assert_close(out.targets.sum(1), torch.ones(6))
    assert checked > 50
    assert torch.equal(x, distinct_images())  # input untouched


def test_cutmix_rejects_feature_batches():
    with pytest.raises(ValueError, match="mixup"):
        cutmix(torch.randn(4, 16), torch.zeros(4, dtype=torch.long), num_classes=K)


def test_mixup_cutmix_switcher_uses_mixup_for_features():
    mixer = MixupCutmix(K, mixup_alpha=0.5, cutmix_alpha=1.0, switch_prob=1.0, rng=0)
    out = mixer(torch.randn(6, 10), torch.arange(6) % K)
    assert out.box is None and out.inputs.shape == (6, 10)
    out = mixer(distinct_images(), torch.arange(6) % K)
    assert out.box is not None


# ---------------------------------------------------------------- losses


def test_label_smoothing_matches_the_formula_and_takes_soft_targets():
    # fine-tuning smooths in the targets (soft_targets) and trains with torch's CrossEntropyLoss on them
    logits, y = torch.randn(8, K), torch.randint(0, K, (8,))
    logp = F.log_softmax(logits, -1)
    expected = (0.9 * -logp.gather(1, y[:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    torch.testing.assert_close(torch.nn.CrossEntropyLoss()(logits, soft_targets(y, K, smoothing=0.1)), expected)
    torch.testing.assert_close(torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y), expected)
    soft = mixup(torch.randn(8, 3), y, num_classes=K, rng=0).targets
    torch.testing.assert_close(torch.nn.CrossEntropyLoss()(logits, soft), -(soft * logp).sum(-1).mean())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_with_gamma_zero_is_cross_entropy(reduction):
    logits, y = torch.randn(16, K) * 3, torch.randint(0, K, (16,))
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, reduction=reduction)(logits, y), F.cross_entropy(logits, y, reduction=reduction)
    )


def test_focal_soft_targets_agree_with_hard_ones():
    logits, y = torch.randn(16, K), torch.randint(0, K, (16,))
    alpha = torch.rand(K) + 0.5
    hard = focal_loss(logits, y, gamma=2.0, alpha=alpha, reduction="none")
    soft = focal_loss(logits, F.one_hot(y, K).float(), gamma=2.0, alpha=alpha, reduction="none")
    torch.testing.assert_close(hard, soft)
    torch.testing.assert_close(hard, alpha[y] * focal_loss(logits, y, gamma=2.0, reduction="none"))


def test_focal_down_weights_easy_examples():
    y = torch.tensor([0, 0])
    logits = torch.tensor([[6.0, 0, 0, 0, 0], [0.2, 0, 0, 0, 0]])  # easy, hard
    ce = F.cross_entropy(logits, y, reduction="none")
    focal = FocalLoss(gamma=2.0, reduction="none")(logits, y)
    assert (focal <= ce).all()
    ratio = focal / ce
    assert ratio[0] < 1e-4 and ratio[1] > 0.4  # the easy sample nearly vanishes, the hard one stays
    assert ratio[0] < ratio[1] / 1000


def test_class_balanced_weights_match_the_formula():
    counts, beta = [1000, 100, 10, 1], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = torch.tensor([r / sum(raw) * len(counts) for r in raw])
    weights = class_balanced_weights(counts, beta)
    torch.testing.assert_close(weights, expected.float())
    assert weights.sum().item() == pytest.approx(4.0)
    assert torch.all(weights[:-1] < weights[1:])  # rarer class, larger weight
    torch.testing.assert_close(class_balanced_weights(counts, 0.0), torch.ones(4))
    assert torch.isfinite(class_balanced_weights([5, 0, 3], 0.999)).all()


def test_class_balanced_loss_variants():
    counts = [50, 10, 5, 2, 1]
    logits, y = torch.randn(12, K), torch.randint(0, K, (12,))
    w = class_balanced_weights(counts, 0.999)
    softmax = ClassBalancedLoss(counts, beta=0.999, loss_type="softmax")(logits, y)
    torch.testing.assert_close(softmax, (w[y] * F.cross_entropy(logits, y, reduction="none")).mean())
    focal0 = ClassBalancedLoss(counts, beta=0.999, loss_type="focal", gamma=0.0)(logits, y)
    torch.testing.assert_close(focal0, softmax)
    focal2 = ClassBalancedLoss(counts, beta=0.999, loss_type="focal", gamma=2.0)(logits, y)
    torch.testing.assert_close(focal2, FocalLoss(2.0, alpha=w)(logits, y))
    sigmoid = ClassBalancedLoss(counts, beta=0.999, loss_type="sigmoid")(logits, y)
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(y, K).float(), reduction="none").sum(1)
    torch.testing.assert_close(sigmoid, (w[y] * bce).mean())
    with pytest.raises(ValueError):
        ClassBalancedLoss(counts, loss_type="hinge")


def test_losses_accept_mixed_targets_and_backprop():
    x, y = torch.randn(6, 4), torch.randint(0, K, (6,))
    batch = mixup(x, y, num_classes=K, rng=np.random.default_rng(0))
    head = torch.nn.Linear(4, K)
    for loss_fn in (torch.nn.CrossEntropyLoss(), FocalLoss(2.0), ClassBalancedLoss([3, 3, 2, 2, 1])):
        head.zero_grad()
        loss = loss_fn(head(batch.inputs), batch.targets)
        loss.backward()
        assert torch.isfinite(loss) and head.weight.grad.abs().sum() > 0
