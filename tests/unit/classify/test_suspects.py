"""Label errors (clipapp/classify/suspects.py, `eval --suspects`): the score, the ranking, the CSV, and on the demo
model that flipped labels come first."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clipapp.classify.evaluation import evaluate_folder
from clipapp.classify.suspects import CSV_HEADER, SuspectRanker, rank_labelled, suspect_scores
from clipapp.errors import ClipAppError
from clipapp.images.fashion_mnist import CLASS_NAMES
from tests.support.demo import demo_service, fashion_images
from tests.support.fashion import class_folder_name


def test_score_is_one_minus_p_given_where_the_model_prefers_another_class():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.45, 0.1, 0.45]], np.float32)
    scores, predicted = suspect_scores(probs, np.array([0, 2, 2]))
    np.testing.assert_allclose(scores, [0.0, 0.7, 0.0], rtol=1e-6)  # a tie with the given label is no doubt
    assert predicted.tolist()[:2] == [0, 1]


def test_ranking_is_most_suspect_first_across_batches_and_bounded(tmp_path):
    ranker = SuspectRanker(["a", "b"])
    ranker.add(["x", "y"], np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([0, 0]))
    ranker.add(["z", "w"], np.array([[0.05, 0.95], [0.3, 0.7]]), np.array([0, 1]))
    assert [(s.image, s.given, s.predicted) for s in ranker.ranked()] == [("z", "a", "b"), ("x", "a", "b")]
    assert [s.image for s in ranker.ranked(1)] == ["z"]
    assert ranker.write_csv(tmp_path / "out" / "suspects.csv") == 2
    with open(tmp_path / "out" / "suspects.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [list(CSV_HEADER), ["z", "a", "b", "0.95"], ["x", "a", "b", "0.8"]]
    assert not list((tmp_path / "out").glob("*.partial"))


@pytest.fixture(scope="module")
def flipped_folder(tmp_path_factory):
    """200 Fashion-MNIST test images in class folders, 20 of them (known) in the wrong class's folder."""
    root = tmp_path_factory.mktemp("flipped")
    images, labels = fashion_images(200)
    rng = np.random.default_rng(0)
    flipped = set(rng.choice(200, 20, replace=False).tolist())
    wrong = set()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder_label = (label + 1 + i % 9) % 10 if i in flipped else label
        folder = root / class_folder_name(CLASS_NAMES[folder_label])
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i:04d}.png")
        if i in flipped:
            wrong.add(str(folder / f"{i:04d}.png"))
    return root, wrong


def test_eval_ranks_the_flipped_images_first(flipped_folder):
    root, wrong = flipped_folder
    result = evaluate_folder(demo_service(), root, suspects=True, suspects_limit=10, batch_size=32)
    top = result.to_dict()["suspects"]
    assert len(top) == 10 and [s["score"] for s in top] == sorted((s["score"] for s in top), reverse=True)
    # bench/bench_label_checks.py: 100% precision at 50 with 10% flipped on 1,000 images
    assert sum(s["image"] in wrong for s in top) >= 8
    assert all(s["given"] != s["predicted"] for s in top)
    json.dumps(result.to_dict())


def test_eval_without_suspects_keeps_its_json(tiny_service, flipped_folder):
    root, _ = flipped_folder
    assert "suspects" not in evaluate_folder(tiny_service, root).to_dict()


def test_a_finetune_set_is_ranked_before_training_and_rows_say_which_to_drop():
    images, labels = fashion_images(60)
    given = labels.copy()
    flipped = [3, 17, 41]
    given[flipped] = (labels[flipped] + 5) % 10
    names = [f"img{i}.png" for i in range(60)]
    ranker = rank_labelled(demo_service(), images, given, [c.lower() for c in CLASS_NAMES], names, batch_size=16)
    rows = ranker.rows(3)
    assert sorted(rows) == flipped
    assert [s.image for s in ranker.ranked(3)] == [names[i] for i in rows]


def test_rank_labelled_refuses_misaligned_inputs(tiny_service):
    with pytest.raises(ClipAppError, match="a class and a name"):
        rank_labelled(tiny_service, [1, 2], [0], ["a", "b"], ["x", "y"])
