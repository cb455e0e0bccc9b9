"""`clipapp explain` and /v1/explain: the JSON shape (a grid per image and label covering the image, rows top to
bottom), the same answers from both, overlay PNGs with --out, and user mistakes as messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipapp.app.cli import main
from clipapp.app.http_api import create_app
from clipapp.app.sessions import SessionStore
from tests.support.paths import EXAMPLES_DIR

FASHION = EXAMPLES_DIR / "fashion"


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    """A sneaker on the left of a bag (56 x 28), from the Fashion-MNIST examples."""
    left, right = (np.asarray(Image.open(FASHION / name).convert("L")) for name in ("sneaker.png", "bag.png"))
    path = tmp_path_factory.mktemp("composite") / "sneaker and bag.png"
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path)
    return path


def _peak_column(entry) -> tuple[int, int]:
    grid = np.asarray(entry["grid"])
    return int(grid.argmax()) % grid.shape[1], grid.shape[1]


def test_cli_json_locates_each_label_and_draws_overlays(capsys, composite, tmp_path):
    out = tmp_path / "overlays"
    square = FASHION / "coat.png"
    argv = ["explain", str(composite), str(square), "--labels", "sneaker, bag", "--model", "demo", "--device", "cpu"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "demo" and result["method"] == "crops" and result["labels"] == ["sneaker", "bag"]
    assert [item["image"] for item in result["results"]] == [str(composite), str(square)]
    wide, tall = result["results"]
    assert [entry["label"] for entry in wide["labels"]] == ["sneaker", "bag"]
    for entry in wide["labels"]:
        assert np.asarray(entry["grid"]).shape == (4, 8)  # covers the 56 x 28 image: 4 rows, 8 columns
    assert np.asarray(tall["labels"][0]["grid"]).shape == (8, 8)
    sneaker_col, cols = _peak_column(wide["labels"][0])
    bag_col, _ = _peak_column(wide["labels"][1])
    assert sneaker_col < cols / 2 <= bag_col  # the sneaker's peak on the left, the bag's on the right
    written = sorted(p.name for p in out.iterdir())
    assert written == ["coat--bag.png", "coat--sneaker.png", "sneaker and bag--bag.png", "sneaker and bag--sneaker.png"]
    assert Image.open(out / "sneaker and bag--bag.png").size == (224, 112)


def test_cli_text_names_the_strongest_cell(capsys, composite):
    assert main(["explain", str(composite), "--labels", "sneaker", "--model", "demo", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "region maps: crops" in text and "(4 x 8 grid)" in text
    assert "sneaker: strongest at row" in text


def test_cli_mistakes_exit_2_with_a_message(capsys, composite):
    assert main(["explain", str(composite), "--labels", ",,", "--model", "demo", "--device", "cpu", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "No labels" in captured.err
    with pytest.raises(SystemExit) as exited:  # argparse refuses it before any model is loaded
        main(["explain", str(composite), "--labels", "a", "--cells", "0"])
    assert exited.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_v1_explain_answers_as_the_cli(capsys, tiny_service, tiny_spec, photos, tmp_path):
    api = TestClient(create_app(SessionStore(tiny_service, tmp_path / "state", EXAMPLES_DIR)))
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]]
    response = api.post("/v1/explain", files=files, data={"labels": "cat, rocket", "method": "occlusion"})
    assert response.status_code == 200
    got = response.json()
    assert (
        main(
            [
                "explain",
                *map(str, photos[:2]),
                "--labels",
                "cat, rocket",
                "--method",
                "occlusion",
                "--model",
                tiny_spec,
                "--json",
            ]
        )
        == 0
    )
    expected = json.loads(capsys.readouterr().out)
    assert [item["image"] for item in got["results"]] == [p.name for p in photos[:2]]
    assert got["method"] == "occlusion" and got["labels"] == expected["labels"]
    for mine, theirs in zip(got["results"], expected["results"], strict=True):
        for a, b in zip(mine["labels"], theirs["labels"], strict=True):
            assert a["label"] == b["label"]
            # the CLI decodes JPEG files at reduced scale (ClipService.decode_side), /v1 the upload in full
            np.testing.assert_allclose(a["grid"], b["grid"], atol=2e-3)
    bad = api.post("/v1/explain", files=files, data={"labels": "cat", "method": "magic"})
    assert bad.status_code == 422 and "method" in bad.json()["error"]
    empty = api.post("/v1/explain", files=files, data={"labels": " , "})
    assert empty.status_code == 400 and "No labels" in empty.json()["error"]


def test_gradio_api_explain_answers_the_cli_json(client, photos):
    """`client.predict(files, labels, api_name="/explain")`: files and labels required, the rest defaulted."""
    from gradio_client import handle_file

    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/explain"]
    assert [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]] == ["files_", "labels_"]
    result = client.predict(handle_file(str(photos[2])), "cat, rocket", api_name="/explain")
    assert result["method"] == "crops" and result["labels"] == ["cat", "rocket"]
    (item,) = result["results"]
    assert item["image"] == photos[2].name
    assert np.asarray(item["labels"][0]["grid"]).shape == (5, 8)  # the cat photo is 384 x 255: 8 x 255/384 rows
