""" "None of these" (clipapp/model/unknown.py): the gap, its calibration and scores, and on the demo model that
images of other classes are flagged far more often than images of the labels."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.images.fashion_mnist import CLASS_NAMES
from clipapp.model import unknown
from tests.support.demo import demo_service, digit_images, fashion_images


def test_gap_is_the_best_label_minus_the_mean_of_labels_and_background():
    labels = np.array([[0.9, 0.1], [0.2, 0.3]], np.float32)
    background = np.array([[0.5, 0.5, 0.0], [0.3, 0.3, 0.3]], np.float32)
    np.testing.assert_allclose(unknown.gaps(labels, background), [0.9 - 2.0 / 5, 0.3 - 1.4 / 5], rtol=1e-6)


def test_scores_are_one_half_at_the_cutoff_and_fall_as_the_gap_grows():
    calibration = unknown.Calibration(cutoff=0.3, width=0.05)
    score = unknown.scores(np.array([0.0, 0.29, 0.3, 0.31, 0.6, 50.0, -50.0]), calibration)
    assert score[2] == pytest.approx(0.5)
    assert np.all(np.diff(score[:5]) < 0) and score[5] < 1e-20 and score[6] == pytest.approx(1.0)
    assert np.all((score >= 0) & (score <= 1))


def test_calibrate_flags_the_asked_share_of_label_images():
    gaps = np.random.default_rng(0).normal(0.5, 0.1, 10_000)
    calibration = unknown.calibrate(gaps, flag_rate=0.05)
    assert np.mean(unknown.scores(gaps, calibration) > 0.5) == pytest.approx(0.05, abs=0.002)
    assert calibration.width > 0


def test_a_model_without_a_calibration_gets_the_uncalibrated_one():
    assert unknown.calibration_for("demo") == unknown.CALIBRATIONS["demo"]
    assert unknown.calibration_for("ViT-B-32:laion2b_s34b_b79k") == unknown.UNCALIBRATED


def test_demo_model_flags_digits_far_more_often_than_clothes():
    service = demo_service()
    detect = unknown.detector(service, [c.lower() for c in CLASS_NAMES])
    clothes, _ = fashion_images(300)
    inside = detect(service.encode_images(clothes))
    outside = detect(service.encode_images(digit_images(300)))
    # bench/bench_label_checks.py: 5.9% of clothes and 49.7% of digits on 2,000 / 1,797 images
    assert inside.flag.mean() < 0.15 and outside.flag.mean() > 0.3
    np.testing.assert_array_equal(inside.flag, inside.score > 0.5)


def test_zero_shot_reports_unknown_only_when_asked(tiny_service, photos):
    plain = tiny_service.zero_shot(photos[:2], ["cat", "dog"])
    assert plain.unknown is None
    result = tiny_service.zero_shot(photos[:2], ["cat", "dog"], unknown=True)
    expected = unknown.detector(tiny_service, ["cat", "dog"])(tiny_service.encode_images(photos[:2]))
    np.testing.assert_allclose(result.unknown.score, expected.score, rtol=1e-5)
    np.testing.assert_allclose(result.probs, plain.probs)  # the label probabilities do not change
