"""The label check (clipapp/model/label_check.py): each kind of warning, and none for a good label set."""

from __future__ import annotations

import numpy as np

from clipapp.images.fashion_mnist import CLASS_NAMES
from clipapp.model.label_check import CLOSE_FRACTION, check_labels, close_pairs, text_warnings
from tests.support.demo import demo_service


def kinds(warnings) -> list[tuple[str, list[str]]]:
    return [(w.kind, list(w.labels)) for w in warnings]


def test_empty_entries_and_duplicates_are_reported_without_a_model():
    labels, warnings = text_warnings("cat,, dog\nCat ,bird,\n")
    assert labels == ["cat", "dog", "bird"]
    assert kinds(warnings) == [("empty", []), ("duplicate", ["cat", "Cat"])]
    assert "entry 2" in warnings[0].message
    assert text_warnings("cat, dog,\n")[1] == []  # a trailing comma or newline is how lists are typed


def test_the_fashion_classes_pass_and_learnt_synonyms_are_too_close():
    service = demo_service()
    assert check_labels(service, [c.lower() for c in CLASS_NAMES]) == []
    warnings = check_labels(service, "sneaker, trainer, dress, coat, jacket")
    assert sorted(kinds(warnings)) == [("too_close", ["coat", "jacket"]), ("too_close", ["sneaker", "trainer"])]
    assert all(w.to_dict()["kind"] == "too_close" and "merge" in w.to_dict()["message"] for w in warnings)


def test_a_label_longer_than_the_context_is_reported_and_not_encoded(tiny_service):
    long_label = " ".join(["word"] * (tiny_service.context_length + 5))
    warnings = check_labels(tiny_service, ["cat", long_label, "dog"])
    assert [w.kind for w in warnings if w.kind != "too_close"] == ["too_long"]
    assert "at most" in warnings[0].message


def test_close_pairs_scale_with_the_spread():
    rng = np.random.default_rng(0)
    background = rng.standard_normal((20, 16)).astype(np.float32)
    background /= np.linalg.norm(background, axis=1, keepdims=True)
    a = background[0] + 0.01 * rng.standard_normal(16).astype(np.float32)
    labels = np.stack([background[0], a / np.linalg.norm(a), background[1]])
    pairs, spread = close_pairs(labels, background[2:])
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] < CLOSE_FRACTION * spread
