"""The Fine-tune tab's "Check my labels" as actions: the review (warnings, suspects with keys) on the demo model,
dropping the ticked images, and the per-session memory of what was dropped."""

from __future__ import annotations

import numpy as np

from clipapp.app import actions
from clipapp.app.ui.finetune_tab import DroppedImages
from clipapp.finetune.intake import LabelledImages
from clipapp.images.fashion_mnist import CLASS_NAMES
from tests.support.demo import demo_service, fashion_images


def flipped_set() -> tuple[LabelledImages, list[int]]:
    images, labels = fashion_images(40)
    given = labels.copy()
    flipped = [5, 22]
    given[flipped] = (labels[flipped] + 3) % 10
    names = [f"{i}.png" for i in range(40)]
    return LabelledImages(list(images), given, [c.lower() for c in CLASS_NAMES], names), flipped


def test_review_finds_the_flipped_images_and_dropping_them_removes_only_those():
    data, flipped = flipped_set()
    review = actions.review_labels(demo_service(), data, limit=2)
    assert sorted(int(s.image.split(".")[0]) for s in review.suspects) == flipped
    assert review.keys == [f"{s.given}/{s.image}" for s in review.suspects]
    payload = review.to_dict()
    assert payload["warnings"] == [] and [s["key"] for s in payload["suspects"]] == review.keys
    kept = actions.drop_images(data, review.keys)
    assert len(kept) == 38 and not {"5.png", "22.png"} & set(kept.names)
    np.testing.assert_array_equal(kept.targets, np.delete(data.targets, flipped))
    assert actions.drop_images(data, []) is data


def test_a_key_names_the_class_too():
    data = LabelledImages(["a", "b"], np.array([0, 1]), ["cat", "dog"], ["x.png", "x.png"])
    assert actions.drop_images(data, ["dog/x.png"]).sources == ["a"]


def test_dropped_images_are_kept_per_session_and_bounded():
    dropped = DroppedImages(sessions=2)
    dropped.set("s1", ["cat/a.png"])
    dropped.set("s2", ["dog/b.png"])
    dropped.set("", ["ignored"])  # no session (an API call): nothing to remember it by
    assert dropped.get("s1") == ("cat/a.png",) and dropped.get("") == ()
    dropped.set("s3", [])
    assert dropped.get("s2") == ()  # the least recently used session went first
