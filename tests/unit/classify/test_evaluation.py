"""`eval` streamed like `classify`: top-1/top-5 from counts, per-class accuracy, the confusion matrix and its PNG."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from clipapp.app.cli import main
from clipapp.classify.evaluation import evaluate_folder
from clipapp.images.fashion_mnist import CLASS_NAMES
from tests.support.fashion import N_IMAGES, class_folder_name


def reference_metrics(service, root):
    """Everything in memory, the plain way: encode all, one matrix product, argsort."""
    from clipapp.images.folders import ImageFolder

    data = ImageFolder.scan(root)
    features = service.encode_images([str(p) for p in data.paths])
    logits = features @ service.text_embeddings(list(data.class_names), "simple").T
    order = np.argsort(-logits, axis=1)
    targets = np.array(data.targets)
    confusion = np.zeros((len(data.class_names),) * 2, dtype=int)
    np.add.at(confusion, (targets, order[:, 0]), 1)
    return (order[:, 0] == targets).mean(), (order[:, :5] == targets[:, None]).any(1).mean(), confusion


def test_streamed_eval_equals_the_in_memory_computation(tiny_service, fashion_folder):
    result = evaluate_folder(tiny_service, fashion_folder, batch_size=7)  # batches that do not divide the set
    top1, top5, confusion = reference_metrics(tiny_service, fashion_folder)
    assert result.n == N_IMAGES
    assert result.top1 == pytest.approx(top1) and result.top5 == pytest.approx(top5)
    np.testing.assert_array_equal(result.confusion, confusion)
    per_class = result.per_class()
    assert [row["class"] for row in per_class] == sorted(class_folder_name(c) for c in CLASS_NAMES)
    assert sum(row["n"] for row in per_class) == N_IMAGES
    for i, row in enumerate(per_class):
        assert row["top1"] == pytest.approx(confusion[i, i] / confusion[i].sum())


def test_cli_eval_prints_per_class_and_writes_the_confusion_png(capsys, tiny_spec, fashion_folder, tmp_path):
    png = tmp_path / "confusion.png"
    assert main(["eval", str(fashion_folder), "--model", tiny_spec, "--out", str(png), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n"] == N_IMAGES and len(payload["confusion"]) == 10 and len(payload["per_class"]) == 10
    assert Image.open(png).size[0] > 200
    assert main(["eval", str(fashion_folder), "--model", tiny_spec]) == 0
    text = capsys.readouterr().out
    assert "per class" in text and "sneaker" in text


def test_eval_from_a_zip_and_unreadable_images(tiny_service, fashion_folder, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(fashion_folder.rglob("*.png"))[:40]:
            z.write(path, f"set/{path.parent.name}/{path.name}")
        z.writestr("set/bag/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = evaluate_folder(tiny_service, archive)
    assert result.n == 40 and [s.path.endswith("broken.png") for s in result.skipped] == [True]
