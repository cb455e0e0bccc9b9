"""clipapp/model/scoring.py: the one implementation of classification scores, and the three users that share it
(ClipService / ZeroShotResult, the streamed LabelScorer, fine-tuned adapters)."""

from __future__ import annotations

import numpy as np
import torch

from clipapp.model import scoring


def test_label_logits_scale_and_bias():
    cosine = np.array([[0.5, -0.25]], dtype=np.float32)
    np.testing.assert_array_equal(scoring.label_logits(cosine, 100.0), [[50.0, -25.0]])
    np.testing.assert_array_equal(scoring.label_logits(cosine, 10.0, -5.0), [[0.0, -7.5]])
    assert scoring.label_logits(cosine.astype(np.float64), 2.0).dtype == np.float32


def test_probabilities_are_the_softmax_or_independent_sigmoids():
    logits = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32) * 4
    softmax = scoring.probabilities(logits)
    np.testing.assert_allclose(softmax, torch.from_numpy(logits).softmax(-1).numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, atol=1e-6)
    sigmoid = scoring.probabilities(logits, multi_label=True)
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_top_k_is_clamped_and_matches_the_full_probabilities():
    logits = np.random.default_rng(2).normal(size=(7, 4)).astype(np.float32) * 3
    for multi_label in (False, True):
        indices, probs = scoring.top_k(logits, 100, multi_label=multi_label)
        assert indices.shape == probs.shape == (7, 4)
        full = scoring.probabilities(logits, multi_label=multi_label)
        np.testing.assert_array_equal(indices, np.argsort(-full, axis=1))
        np.testing.assert_allclose(probs, np.take_along_axis(full, indices, 1), rtol=1e-5, atol=1e-7)
    assert scoring.top_k(logits, 0)[0].shape == (7, 1)


def test_zero_shot_result_probs_and_top_come_from_its_logits(tiny_service, photos):
    result = tiny_service.zero_shot(photos[:3], ["cat", "rocket", "shoe"], templates="a photo of a {}.")
    np.testing.assert_array_equal(result.logits, tiny_service.label_logits(result.cosine))
    np.testing.assert_array_equal(result.probs, scoring.probabilities(result.logits))
    np.testing.assert_array_equal(result.probs, tiny_service.label_probabilities(result.cosine))
    indices, probs = scoring.top_k(result.logits, 2)
    rows = zip(indices.tolist(), probs.tolist(), strict=True)
    assert result.top(2) == [[(result.labels[j], p) for j, p in zip(row, row_p, strict=True)] for row, row_p in rows]


def test_the_streamed_scorer_and_the_service_score_alike(tiny_service, photos):
    from clipapp.classify.stream import zero_shot_classifier

    labels = ["cat", "rocket", "shoe"]
    scorer = zero_shot_classifier(tiny_service, labels, templates="a photo of a {}.")
    features = tiny_service.encode_images(photos[:3])
    result = tiny_service.zero_shot(photos[:3], labels, templates="a photo of a {}.", image_features=features)
    np.testing.assert_allclose(scorer.probabilities(features), result.probs, atol=1e-6)
    indices, probs = scorer.top(features, 3)
    assert [[labels[j] for j in row] for row in indices.tolist()] == [[lbl for lbl, _ in row] for row in result.top(3)]
