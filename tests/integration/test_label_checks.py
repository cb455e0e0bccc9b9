"""The label checks through every front end: "none of these" (`unknown`, `unknown_score`, the CSV columns,
--no-unknown), the label check's `"warnings"`, and `eval --suspects`; the CLI, /v1 and the Gradio API."""

from __future__ import annotations

import csv
import json

import pytest
from fastapi.testclient import TestClient
from gradio_client import handle_file

from clipapp.app.cli import main
from clipapp.classify.predictions import csv_header
from tests.support.fashion import N_IMAGES
from tests.support.paths import EXAMPLES_DIR


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    from tests.support.fashion import write_fashion_folder

    return write_fashion_folder(tmp_path_factory.mktemp("fashion"))


def test_classify_says_unknown_per_image_unless_told_not_to(capsys, tiny_spec, photos, tmp_path):
    args = ["classify", *map(str, photos[:3]), "--labels", "cat, rocket", "--model", tiny_spec, "--json"]
    code, out, _ = run_cli(capsys, *args)
    rows = json.loads(out)["results"]
    assert code == 0 and len(rows) == 3
    assert all(isinstance(r["unknown"], bool) and 0.0 <= r["unknown_score"] <= 1.0 for r in rows)
    assert all(r["unknown"] == (r["unknown_score"] > 0.5) for r in rows)
    assert json.loads(out)["warnings"] == []
    code, out, _ = run_cli(capsys, *args, "--no-unknown")
    assert code == 0 and all(set(r) == {"image", "top"} for r in json.loads(out)["results"])


def test_classify_csv_has_the_unknown_columns_and_no_unknown_keeps_the_old_ones(capsys, tiny_spec, photos, tmp_path):
    common = [*map(str, photos[:2]), "--labels", "cat, rocket", "--model", tiny_spec, "--top-k", "2"]
    assert run_cli(capsys, "classify", *common, "--csv", str(tmp_path / "a.csv"))[0] == 0
    assert run_cli(capsys, "classify", *common, "--csv", str(tmp_path / "b.csv"), "--no-unknown")[0] == 0
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == csv_header(2) + ["unknown", "unknown_score"]
    assert all(row[-2] in ("true", "false") and 0 <= float(row[-1]) <= 1 for row in rows[1:])
    with open(tmp_path / "b.csv", newline="") as f:
        assert next(csv.reader(f)) == csv_header(2)


def test_label_warnings_go_to_stderr_and_json(capsys, tiny_spec, photos):
    code, out, err = run_cli(
        capsys, "classify", str(photos[0]), "--labels", "cat,, rocket", "--model", tiny_spec, "--json"
    )
    assert code == 0
    assert [w["kind"] for w in json.loads(out)["warnings"]] == ["empty"]
    assert "warning: 1 empty label(s)" in err
    code, _, err = run_cli(capsys, "classify", str(photos[0]), "--labels", "cat, Cat", "--model", tiny_spec)
    # a duplicate cannot be classified: refused with the one error line of every user mistake (the labels box
    # on the page warns of it as you type: tests/unit/model/test_label_check.py)
    assert code == 2 and err == "error: Duplicate label(s) 'Cat': each label must be given once.\n"


def test_eval_suspects_csv_and_bounded_json(capsys, tiny_spec, fashion_folder, tmp_path):
    out_csv = tmp_path / "suspects.csv"
    code, out, _ = run_cli(
        capsys,
        "eval",
        str(fashion_folder),
        "--model",
        tiny_spec,
        "--suspects",
        str(out_csv),
        "--suspects-top",
        "5",
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "given", "predicted", "score"]
    doubted = rows[1:]
    misses = N_IMAGES - round(payload["top1"] * N_IMAGES)  # a random tiny model gets most wrong
    assert len(doubted) == misses and misses > 5
    scores = [float(r[3]) for r in doubted]
    assert scores == sorted(scores, reverse=True) and all(r[1] != r[2] for r in doubted)
    assert [s["image"] for s in payload["suspects"]] == [r[0] for r in doubted[:5]]
    code, out, _ = run_cli(capsys, "eval", str(fashion_folder), "--model", tiny_spec)
    assert "suspect" not in out
    code, out, _ = run_cli(capsys, "eval", str(fashion_folder), "--model", tiny_spec, "--suspects", str(out_csv))
    assert "most suspect labels" in out and " -> " in out


@pytest.fixture(scope="module")
def api(tiny_service, tmp_path_factory):
    from clipapp.app.http_api import create_app
    from clipapp.app.sessions import SessionStore

    return TestClient(create_app(SessionStore(tiny_service, tmp_path_factory.mktemp("state"), EXAMPLES_DIR)))


def test_v1_classify_has_unknown_and_warnings(api, photos):
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]]
    payload = api.post("/v1/classify", files=files, data={"labels": "cat,,rocket"}).json()
    assert all("unknown" in r and "unknown_score" in r for r in payload["results"])
    assert [w["kind"] for w in payload["warnings"]] == ["empty"]
    plain = api.post("/v1/classify", files=files, data={"labels": "cat, rocket", "unknown": "false"}).json()
    assert all(set(r) == {"image", "top"} for r in plain["results"])


def test_gradio_classify_and_check_labels(client, photos):
    result = client.predict(handle_file(str(photos[0])), "cat, rocket", api_name="/classify")
    assert 0.0 <= result["results"][0]["unknown_score"] <= 1.0 and result["warnings"] == []
    checked = client.predict("cat, cat,, dog", "simple", "", api_name="/check_labels")
    assert [w["kind"] for w in checked["warnings"]] == ["empty", "duplicate"]


def test_finetune_warns_about_its_class_names_before_training(capsys, tmp_path):
    from tests.support.demo import fashion_images

    images, labels = fashion_images(40)
    paths = {7: [], 9: []}  # sneaker, ankle boot
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if label in paths and len(paths[label]) < 4:
            image.save(tmp_path / f"{i}.png")
            paths[label].append(str(tmp_path / f"{i}.png"))
    code, out, err = run_cli(
        capsys,
        "finetune",
        "--class",
        "sneaker=" + ",".join(paths[7]),
        "--class",
        "trainer=" + ",".join(paths[9]),
        "--out",
        str(tmp_path / "a"),
        "--model",
        "demo",
        "--epochs",
        "2",
        "--json",
    )
    assert code == 0
    assert [w["kind"] for w in json.loads(out)["warnings"]] == ["too_close"]
    assert "warning: 'sneaker' and 'trainer' are nearly the same" in err


def test_gradio_review_labels(client, photos):
    review = client.predict(
        None,
        "cat",
        [handle_file(str(p)) for p in photos[:2]],
        "rocket",
        [handle_file(str(p)) for p in photos[2:4]],
        api_name="/review_labels",
    )
    payload = review[0]
    assert payload["warnings"] == []
    assert all(set(s) == {"image", "given", "predicted", "score", "key"} for s in payload["suspects"])
    assert all(s["key"] == f"{s['given']}/{s['image']}" and s["given"] != s["predicted"] for s in payload["suspects"])


def test_a_zip_of_class_folders_is_checked_before_training_too(tmp_path):
    """A .zip's class names are known once it is extracted: it is extracted once, before training, so its warnings
    come before the first progress report, as a folder's do."""
    import zipfile

    from clipapp.app import actions
    from clipapp.finetune import FinetuneConfig
    from clipapp.model.service import ClipService
    from tests.support.demo import fashion_images

    images, labels = fashion_images(40)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        counts = {7: 0, 9: 0}
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            if label in counts and counts[label] < 4:
                image.save(tmp_path / "x.png")
                zf.write(tmp_path / "x.png", f"{'sneaker' if label == 7 else 'trainer'}/{i}.png")
                counts[label] += 1
    heard: list[str] = []
    report = actions.finetune_to_file(
        ClipService.load("demo", device="cpu"),
        actions.LabelledSource(data_dir=str(archive)),
        FinetuneConfig(mode="head", epochs=2),
        str(tmp_path / "a"),
        progress=lambda done, total, message: heard.append("progress"),
        on_warning=lambda warning: heard.append(warning.kind),
    )
    assert heard[0] == "too_close" and "progress" in heard  # warned before the first progress report
    assert [w.kind for w in report.warnings] == ["too_close"]
