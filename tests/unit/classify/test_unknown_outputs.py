""" "None of these" through dataset-scale classification: the JSON fields, the CSV columns, resume of files with and
without them, and adapters."""

from __future__ import annotations

import csv
import json

import numpy as np

from clipapp.classify import stream as core
from clipapp.classify.predictions import CsvPredictions, JsonlPredictions, csv_header
from clipapp.model import unknown
from tests.support.adapters import random_head, tuned_partial
from tests.support.fashion import LABELS, N_IMAGES


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_results_carry_unknown_only_when_asked(tiny_service, fashion_folder):
    some = sorted(fashion_folder.rglob("*.png"))[:20]
    plain = core.classify_files(tiny_service, some, core.zero_shot_classifier(tiny_service, LABELS), keep_results=True)
    assert set(plain.to_dict()["results"][0]) == {"image", "top"}
    scorer = core.zero_shot_classifier(tiny_service, LABELS, unknown=True)
    report = core.classify_files(tiny_service, some, scorer, keep_results=True, batch_size=7)
    rows = json.loads(json.dumps(report.to_dict()))["results"]
    expected = unknown.detector(tiny_service, LABELS)(tiny_service.encode_images([r["image"] for r in rows]))
    np.testing.assert_allclose([r["unknown_score"] for r in rows], expected.score, atol=1e-5)
    assert [r["unknown"] for r in rows] == [s > 0.5 for s in (r["unknown_score"] for r in rows)]
    # the labels' scores are unchanged (to float rounding: other batch boundaries)
    assert [[t["label"] for t in r["top"]] for r in rows] == [[label for label, _ in p.top] for p in plain.results]
    np.testing.assert_allclose(
        [[t["prob"] for t in r["top"]] for r in rows], [[prob for _, prob in p.top] for p in plain.results], atol=1e-6
    )


def test_csv_and_jsonl_get_the_unknown_columns(tiny_service, fashion_folder, tmp_path):
    scorer = core.zero_shot_classifier(tiny_service, LABELS, unknown=True)
    outputs = [CsvPredictions(tmp_path / "p.csv", 2, unknown=True), JsonlPredictions(tmp_path / "p.jsonl", 2)]
    core.classify_files(tiny_service, [fashion_folder], scorer, k=2, outputs=outputs)
    for output in outputs:
        output.close()
    rows = read_csv(tmp_path / "p.csv")
    assert rows[0] == csv_header(2) + ["unknown", "unknown_score"] and len(rows) == N_IMAGES + 1
    lines = {json.loads(line)["image"]: json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()}
    for row in rows[1:]:
        assert row[-2] == ("true" if lines[row[0]]["unknown"] else "false")
        assert abs(float(row[-1]) - lines[row[0]]["unknown_score"]) < 1e-5


def test_a_file_resumes_with_its_own_columns(tiny_service, fashion_folder, tmp_path):
    some = sorted(fashion_folder.rglob("*.png"))
    old = tmp_path / "old.csv"  # written without the unknown columns (before they existed, or --no-unknown)
    output = CsvPredictions(old, 2)
    core.classify_files(tiny_service, some[:10], core.zero_shot_classifier(tiny_service, LABELS), k=2, outputs=[output])
    output.close()
    resumed = CsvPredictions(old, 2, resume=True, unknown=True)
    assert not resumed.unknown and len(resumed.done) == 10
    scorer = core.zero_shot_classifier(tiny_service, LABELS, unknown=True)
    core.classify_files(tiny_service, some[:20], scorer, k=2, outputs=[resumed])
    resumed.close()
    rows = read_csv(old)
    assert len(rows) == 21 and all(len(row) == len(csv_header(2)) for row in rows)


def test_a_head_adapter_gets_unknown_from_its_class_names_a_partial_one_none(tiny_service, fashion_folder):

    head = random_head(tiny_service, seed=0)
    some = sorted(fashion_folder.rglob("*.png"))[:6]
    report = core.classify_files(
        tiny_service, some, core.adapter_classifier(tiny_service, head, unknown=True), keep_results=True
    )
    expected = unknown.detector(tiny_service, LABELS[:4])(tiny_service.encode_images([str(p) for p in some]))
    np.testing.assert_allclose([p.unknown_score for p in report.results], expected.score, atol=1e-5)

    partial = tuned_partial(tiny_service, head)
    assert core.adapter_classifier(tiny_service, partial, unknown=True).unknown is None


def test_the_page_classifying_with_an_adapter_says_none_of_these_as_the_cli_does(tiny_service, fashion_folder):
    """The Zero-shot tab (and /classify) with a session adapter: `actions.classify(classifier=adapter)` gives the
    same unknown scores as `classify --adapter`, and none for an adapter with tuned visual blocks."""
    from clipapp.app import actions

    head = random_head(tiny_service, seed=1)
    some = sorted(fashion_folder.rglob("*.png"))[:5]
    images = actions.load_named_images([str(p) for p in some], names=[p.name for p in some])
    page = actions.classify(tiny_service, images, "", classifier=head).to_dict()["results"]
    cli = core.classify_files(
        tiny_service, some, core.adapter_classifier(tiny_service, head, unknown=True), keep_results=True
    ).results
    np.testing.assert_allclose([r["unknown_score"] for r in page], [p.unknown_score for p in cli], atol=1e-5)
    assert [r["unknown"] for r in page] == [p.unknown for p in cli]
    off = actions.classify(tiny_service, images, "", classifier=head, unknown=False).to_dict()["results"]
    assert all("unknown" not in r for r in off)
