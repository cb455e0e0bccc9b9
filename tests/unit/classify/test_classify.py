"""Classification at dataset scale: folders streamed to CSV/JSONL, resume, index vectors, SigLIP probabilities."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import open_clip
import pytest
import torch

from clipapp.app.cli import main
from clipapp.classify import stream as core
from clipapp.classify.predictions import CsvPredictions, JsonlPredictions, csv_header
from clipapp.errors import ClipAppError
from tests.support.adapters import random_head, tuned_partial
from tests.support.fashion import LABELS, N_IMAGES


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_to_csv_matches_zero_shot(capsys, tiny_spec, tiny_service, fashion_folder, tmp_path):
    out = tmp_path / "preds.csv"
    code, stdout, _ = run_cli(
        capsys,
        "classify",
        str(fashion_folder),
        "--labels",
        ",".join(LABELS),
        "--top-k",
        "3",
        "--csv",
        str(out),
        "--model",
        tiny_spec,
        "--precision",
        "fp32",
    )
    assert code == 0 and f"classified {N_IMAGES}" in stdout
    rows = read_csv(out)
    assert rows[0] == ["image", "label", "prob", "label_2", "prob_2", "label_3", "prob_3", "unknown", "unknown_score"]
    assert len(rows) == N_IMAGES + 1
    paths = [row[0] for row in rows[1:]]
    assert len(set(paths)) == N_IMAGES and all(p.startswith(str(fashion_folder)) for p in paths)
    reference = tiny_service.zero_shot(paths, LABELS, templates="simple")
    expected = reference.top(3)
    assert [row[1] for row in rows[1:]] == [top[0][0] for top in expected]
    np.testing.assert_allclose([float(row[2]) for row in rows[1:]], [top[0][1] for top in expected], atol=1e-5)
    for row in rows[1:]:
        assert float(row[2]) >= float(row[4]) >= float(row[6])


def test_resume_continues_a_torn_partial_file(tiny_service, fashion_folder, tmp_path):
    classifier = core.zero_shot_classifier(tiny_service, LABELS)
    full = tmp_path / "full.csv"
    output = CsvPredictions(full, 2)
    core.classify_files(tiny_service, [fashion_folder], classifier, k=2, outputs=[output])
    output.close()
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    # What a kill leaves: the header, 100 finished rows, and half of the next row without its newline.
    partial.write_text("".join(lines[:101]) + lines[101][:15], encoding="utf-8")

    before = tiny_service.stats.images_encoded
    output = CsvPredictions(partial, 2, resume=True)
    assert len(output.done) == 100
    report = core.classify_files(tiny_service, [fashion_folder], classifier, k=2, outputs=[output])
    output.close()
    assert (report.resumed, report.classified) == (100, N_IMAGES - 100)
    assert tiny_service.stats.images_encoded - before == N_IMAGES - 100  # the done ones were not encoded again
    resumed, expected = read_csv(partial), read_csv(full)
    assert [row[:2] + row[3::2] for row in resumed] == [row[:2] + row[3::2] for row in expected]  # images, labels
    # probabilities to float rounding: other batch boundaries, other BLAS blocking
    np.testing.assert_allclose(
        [[float(v) for v in row[2::2]] for row in resumed[1:]],
        [[float(v) for v in row[2::2]] for row in expected[1:]],
        atol=1e-5,
    )


def test_resume_through_the_cli_and_a_wrong_top_k(capsys, tiny_spec, fashion_folder, tmp_path):
    out = tmp_path / "p.jsonl"
    first = sorted(fashion_folder.rglob("*.png"))[:10]
    args = ["--labels", ",".join(LABELS), "--model", tiny_spec, "--json"]
    assert run_cli(capsys, "classify", *map(str, first), "--jsonl", str(out), *args)[0] == 0
    code, stdout, _ = run_cli(capsys, "classify", str(fashion_folder), "--jsonl", str(out), "--resume", *args)
    assert code == 0
    payload = json.loads(stdout)
    assert (payload["resumed"], payload["classified"]) == (10, N_IMAGES - 10)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == N_IMAGES == len({r["image"] for r in rows})
    assert set(rows[0]) == {"image", "top", "unknown", "unknown_score"} and len(rows[0]["top"]) == 5

    csv_out = tmp_path / "p.csv"
    assert run_cli(capsys, "classify", *map(str, first), "--csv", str(csv_out), "--top-k", "2", *args)[0] == 0
    code, _, err = run_cli(capsys, "classify", str(fashion_folder), "--csv", str(csv_out), "--resume", *args)
    assert code == 2 and "--top-k 2" in err


def test_index_classify_equals_file_classify(capsys, tiny_spec, fashion_folder, tmp_path):
    index = tmp_path / "index"
    assert main(["index", str(fashion_folder), "--index", str(index), "--model", tiny_spec, "--json"]) == 0
    capsys.readouterr()
    by_file, by_index = tmp_path / "files.csv", tmp_path / "index.csv"
    common = ["--labels", ",".join(LABELS), "--model", tiny_spec, "--top-k", "3"]
    assert run_cli(capsys, "classify", str(fashion_folder), "--csv", str(by_file), *common)[0] == 0
    assert run_cli(capsys, "classify", "--index", str(index), "--csv", str(by_index), *common)[0] == 0
    files = {row[0]: row[1:] for row in read_csv(by_file)[1:]}
    stored = {row[0]: row[1:] for row in read_csv(by_index)[1:]}
    assert set(files) == set(stored) and len(files) == N_IMAGES
    for path, row in files.items():
        assert row[0::2] == stored[path][0::2]
        np.testing.assert_allclose([float(v) for v in row[1::2]], [float(v) for v in stored[path][1::2]], atol=1e-4)


def test_unreadable_files_are_listed_and_skipped(capsys, tiny_spec, fashion_folder, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(fashion_folder.rglob("*.png"))[:3]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not listed: not an image extension")
    code, stdout, err = run_cli(capsys, "classify", str(folder), "--labels", "a,b", "--model", tiny_spec, "--json")
    assert code == 0
    payload = json.loads(stdout)
    assert len(payload["results"]) == 3 and payload["classified"] == 3
    assert [s["path"] for s in payload["skipped"]] == [str(folder / "broken.png")]
    assert "broken.png" in err
    code, stdout, err = run_cli(
        capsys, "classify", str(folder / "broken.png"), "--labels", "a,b", "--model", tiny_spec, "--json"
    )
    assert code == 2 and stdout == "" and "No image could be classified" in err
    assert run_cli(capsys, "classify", str(tmp_path / "absent"), "--labels", "a,b", "--model", tiny_spec)[0] == 2


def test_web_request_limit_says_how_to_do_more(photos):
    from clipapp.app.actions import load_named_images

    with pytest.raises(ClipAppError, match=r"at most 64.*python -m clipapp classify FOLDER .*--csv"):
        load_named_images([photos[0]] * 65)


def test_adapter_on_index_head_works_partial_refused(tiny_service, fashion_folder, tmp_path):
    from clipapp.app.actions import index_folder
    from clipapp.index import ImageIndex

    index_folder(tiny_service, fashion_folder, tmp_path / "index")
    index = ImageIndex.open(tmp_path / "index", expected_spec=tiny_service.spec)
    head = random_head(tiny_service, seed=0, bias=True)
    classifier = core.adapter_classifier(tiny_service, head)
    from_index = core.classify_vectors(index.iter_vectors(every_path=True), classifier, keep_results=True)
    from_files = core.classify_files(tiny_service, [fashion_folder], classifier, keep_results=True)
    by_path = {p.image: p for p in from_files.results}
    assert len(from_index.results) == N_IMAGES
    for p in from_index.results:
        assert [label for label, _ in p.top] == [label for label, _ in by_path[p.image].top]
    expected = head.probs_from_features(index.vectors())
    assert math.isclose(max(p for _, p in from_index.results[0].top), float(expected[0].max()), abs_tol=1e-6)

    partial = tuned_partial(tiny_service, head)
    with pytest.raises(ClipAppError, match="needs the pixels"):
        core.classify_vectors(index.iter_vectors(every_path=True), core.adapter_classifier(tiny_service, partial))
    # on files the partial adapter's own tower runs, through the same threaded pipeline
    some = sorted(fashion_folder.rglob("*.png"))[:5]
    report = core.classify_files(tiny_service, some, core.adapter_classifier(tiny_service, partial), keep_results=True)
    assert report.classified == 5


@pytest.fixture(scope="module")
def siglip_service(tmp_path_factory):
    """A tiny open_clip CLIP with a logit bias, as SigLIP models have (tests/data/clipapp-tiny-biased.json; not
    named "siglip": open_clip would then pick its SigLIP tokenizer, which needs transformers)."""
    from clipapp.model.checkpoint import save_state_dict
    from clipapp.model.service import ClipService

    torch.manual_seed(1)
    model = open_clip.create_model("clipapp-tiny-biased")
    assert model.logit_bias is not None
    path = tmp_path_factory.mktemp("siglip") / "tiny-biased.safetensors"
    save_state_dict(model.state_dict(), path)
    return ClipService.load(f"clipapp-tiny-biased:{path}", device="cpu", precision="fp32")


def test_siglip_models_get_independent_sigmoid_probabilities(siglip_service, photos):
    from clipapp.app.actions import NamedImage, classify
    from clipapp.images.decode import load_image

    labels = ["cat", "rocket", "coffee", "astronaut"]
    result = siglip_service.zero_shot(photos, labels, templates="none")
    features = siglip_service.encode_images(photos)
    text = siglip_service.text_embeddings(labels, "none")
    scale = siglip_service.model.logit_scale.exp().item()
    bias = siglip_service.model.logit_bias.item()
    np.testing.assert_allclose(result.probs, 1 / (1 + np.exp(-(scale * features @ text.T + bias))), atol=1e-5)
    assert result.multi_label and not np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-3)
    payload = classify(
        siglip_service, [NamedImage(p.name, load_image(p)) for p in photos[:2]], labels, templates="none", top_k=4
    ).to_dict()
    assert payload["multi_label"] is True and payload["probabilities"] == "sigmoid"
    assert payload["results"][0]["top"][0]["prob"] == pytest.approx(float(result.probs[0].max()), abs=1e-5)


def test_clip_models_keep_the_softmax(tiny_service, photos):
    result = tiny_service.zero_shot(photos, ["cat", "rocket"], templates="none")
    assert not result.multi_label and np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)


def test_csv_header_and_short_rows(tmp_path):
    """Fewer labels than --top-k: empty cells; labels and paths with commas and quotes are quoted, not split."""
    labels = np.array(["cat", 'dog, "big"'], dtype=object)
    batch = core.PredictionBatch(["a,b.png"], labels, np.array([[1, 0]]), np.array([[0.75, 0.25]], np.float32))
    output = CsvPredictions(tmp_path / "x.csv", 3)
    output.write(batch)
    output.close()
    assert read_csv(tmp_path / "x.csv") == [csv_header(3), ["a,b.png", 'dog, "big"', "0.75", "cat", "0.25", "", ""]]
    jsonl = JsonlPredictions(tmp_path / "x.jsonl", 3)
    jsonl.write(batch)
    jsonl.close()
    assert json.loads((tmp_path / "x.jsonl").read_text()) == {
        "image": "a,b.png",
        "top": [{"label": 'dog, "big"', "prob": 0.75}, {"label": "cat", "prob": 0.25}],
    }


def test_top_k_probabilities_equal_the_full_softmax_and_sigmoid():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 30)).astype(np.float32) * 5
    for multi_label in (False, True):
        classifier = core.LabelScorer(
            labels=[str(i) for i in range(30)], model="m", multi_label=multi_label, logits=lambda f: f
        )
        indices, probs = classifier.top(logits, 4)
        full = classifier.probabilities(logits)
        np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :4])
        np.testing.assert_allclose(probs, np.take_along_axis(full, indices, 1), rtol=1e-5, atol=1e-7)


def test_index_copies_of_one_file_each_get_a_row(tiny_service, fashion_folder, tmp_path):
    from clipapp.app.actions import index_folder
    from clipapp.index import ImageIndex

    folder = tmp_path / "pics"
    folder.mkdir()
    first = sorted(fashion_folder.rglob("*.png"))[:3]
    for path in first:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "copy.png").write_bytes(first[0].read_bytes())  # same content: one vector, two paths
    index_folder(tiny_service, folder, tmp_path / "index")
    index = ImageIndex.open(tmp_path / "index")
    assert len(index) == 3 and index.path_count == 4
    batches = list(index.iter_vectors(2, every_path=True))
    paths = [p for batch_paths, _ in batches for p in batch_paths]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())
    report = core.classify_vectors(batches, core.zero_shot_classifier(tiny_service, LABELS), keep_results=True)
    by_path = {p.image: p.top for p in report.results}
    assert by_path[str(folder / "copy.png")] == by_path[str(folder / first[0].name)]


def test_index_classify_tags_the_index_and_search_filters_by_tag(capsys, tiny_spec, fashion_folder, tmp_path):
    from clipapp.index import ImageIndex

    index_path = tmp_path / "index"
    assert main(["index", str(fashion_folder), "--index", str(index_path), "--model", tiny_spec, "--json"]) == 0
    predictions = tmp_path / "p.jsonl"
    common = ["--labels", ",".join(LABELS), "--model", tiny_spec, "--top-k", "3"]
    assert (
        run_cli(
            capsys,
            "classify",
            "--index",
            str(index_path),
            "--jsonl",
            str(predictions),
            "--tag",
            "--tag-min-prob",
            "0.2",
            *common,
        )[0]
        == 0
    )
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    expected = {r["image"]: [(t["label"], t["prob"]) for t in r["top"] if t["prob"] >= 0.2] for r in rows}
    index = ImageIndex.open(index_path)
    for image, tags in expected.items():  # what was predicted is what is stored, probabilities included
        stored = index.tags(image)
        assert [label for label, _ in stored] == [label for label, _ in tags]
        np.testing.assert_allclose([p for _, p in stored], [p for _, p in tags], atol=1e-5)
    label, count = next(iter(index.tag_counts().items()))
    assert 0 < count < N_IMAGES
    tagged = {image for image, tags in expected.items() if label in [t for t, _ in tags]}
    code, out, _ = run_cli(
        capsys,
        "search",
        "--index",
        str(index_path),
        "--text",
        label,
        "-k",
        str(N_IMAGES),
        "--tag",
        label,
        "--model",
        tiny_spec,
        "--json",
    )
    assert code == 0
    assert {hit["path"] for hit in json.loads(out)["results"]} == tagged


def test_tag_needs_an_index(capsys, tiny_spec, fashion_folder):
    code, _, err = run_cli(capsys, "classify", str(fashion_folder), "--labels", "a,b", "--tag", "--model", tiny_spec)
    assert code == 2 and "--tag stores the labels in an index" in err


def test_classify_files_reports_progress_as_done_total_message(tiny_service, fashion_folder):
    """The one progress protocol (clipapp.progress): (done, total, message), ending at total."""
    calls = []
    classifier = core.zero_shot_classifier(tiny_service, LABELS)
    core.classify_files(tiny_service, [fashion_folder], classifier, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, N_IMAGES, "classifying") and calls[-1] == (N_IMAGES, N_IMAGES, "classifying")
