"""From search results to a classifier: `--class NAME=IMAGES` lists, path,label CSVs and `--from-index`, in the
core (clipapp.finetune.intake) and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipapp.app.cli import main
from clipapp.errors import ClipAppError
from clipapp.finetune import labelled_class_lists, labelled_csv, labelled_paths, parse_class_spec
from tests.support.colour_images import CLASSES, colour_images, write_folder


@pytest.fixture
def photos_by_class(tmp_path) -> dict[str, list[str]]:
    root = write_folder(tmp_path / "found", colour_images(4))
    return {name: sorted(str(p) for p in (root / name).iterdir()) for name in CLASSES}


def test_parse_class_spec():
    assert parse_class_spec("sneaker=a.png, b.png,") == ("sneaker", ["a.png", "b.png"])
    assert parse_class_spec("  ankle   boot =x.jpg") == ("ankle boot", ["x.jpg"])
    for bad in ("sneaker", "=a.png", "sneaker=", "sneaker= , "):
        with pytest.raises(ClipAppError, match="NAME=IMAGE"):
            parse_class_spec(bad)


def test_class_lists_keep_the_order_and_refuse_ambiguity(photos_by_class):
    specs = [f"{name}={','.join(paths)}" for name, paths in photos_by_class.items()]
    data = labelled_class_lists(specs)
    assert data.class_names == list(CLASSES)
    assert np.bincount(data.targets).tolist() == [4, 4, 4]
    assert data.names == [p for paths in photos_by_class.values() for p in paths]
    first = photos_by_class["red"][0]
    assert len(labelled_class_lists(specs + [f"red={first}"])) == 12  # the same image twice in a class: once
    with pytest.raises(ClipAppError, match="labelled both 'red' and 'green'"):
        labelled_class_lists(specs + [f"green={first}"])
    with pytest.raises(ClipAppError, match="not found: .*missing.png"):
        labelled_class_lists(specs + ["blue=/nowhere/missing.png"])
    with pytest.raises(ClipAppError, match="at least 2 classes"):
        labelled_class_lists(specs[:1])


def test_csv_with_header_and_relative_paths(tmp_path, photos_by_class):
    rows = ["path,label"] + [
        f"{Path(p).relative_to(tmp_path)},{name}" for name, paths in photos_by_class.items() for p in paths
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n\n")
    data = labelled_csv(tmp_path / "labels.csv")
    assert data.class_names == list(CLASSES) and len(data) == 12
    assert all(Path(name).is_file() for name in data.names)
    (tmp_path / "bad.csv").write_text("a.png,red\njust-a-path\n")
    with pytest.raises(ClipAppError, match="row\\(s\\) 2 are not `path,label`"):
        labelled_csv(tmp_path / "bad.csv")
    with pytest.raises(ClipAppError, match="cannot read"):
        labelled_csv(tmp_path / "absent.csv")


def test_home_is_expanded_in_quoted_lists(tmp_path, photos_by_class, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    specs = [
        f"{name}=" + ",".join("~/" + str(Path(p).relative_to(tmp_path)) for p in paths)
        for name, paths in photos_by_class.items()
    ]
    assert labelled_class_lists(specs).names == [p for paths in photos_by_class.values() for p in paths]


def test_labelled_paths_is_the_selection_entry_point(photos_by_class):
    pairs = [(path, name) for name, paths in photos_by_class.items() for path in paths[:2]]
    data = labelled_paths(pairs, class_names=["blue", "green", "red"])
    assert data.class_names == ["blue", "green", "red"] and data.counts().tolist() == [2, 2, 2]


def run_json(capsys, *argv) -> dict:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_cli_from_index_classes_and_csv(capsys, tiny_spec, tmp_path, photos_by_class):
    index = tmp_path / "index"
    run_json(capsys, "index", str(tmp_path / "found"), "--index", str(index), "--model", tiny_spec, "--json")
    classes = [arg for name, paths in photos_by_class.items() for arg in ("--class", f"{name}={','.join(paths)}")]
    out = tmp_path / "from-search"
    result = run_json(
        capsys,
        "finetune",
        "--from-index",
        str(index),
        *classes,
        "--out",
        str(out),
        "--model",
        tiny_spec,
        "--epochs",
        "10",
        "--json",
    )
    assert result["class_names"] == list(CLASSES) and result["validation"]["n_images"] == 12
    assert Path(result["adapter"]).is_file()
    classified = run_json(
        capsys, "classify", photos_by_class["green"][0], "--adapter", str(out), "--model", tiny_spec, "--json"
    )
    assert classified["results"][0]["top"][0]["label"] in CLASSES

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("".join(f"{p},{name}\n" for name, paths in photos_by_class.items() for p in paths))
    result = run_json(
        capsys,
        "finetune",
        "--from-csv",
        str(csv_path),
        "--out",
        str(tmp_path / "from-csv"),
        "--model",
        tiny_spec,
        "--epochs",
        "10",
        "--json",
    )
    assert result["class_names"] == list(CLASSES) and result["validation"]["n_images"] == 12


def test_cli_intake_errors_are_messages(capsys, tiny_spec, tmp_path, photos_by_class):
    spec = f"red={photos_by_class['red'][0]}"
    assert main(["finetune", str(tmp_path), "--class", spec, "--out", str(tmp_path / "x"), "--model", tiny_spec]) == 2
    assert "one way" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path / "x"), "--model", tiny_spec]) == 2
    assert "one way" in capsys.readouterr().err
    assert main(["finetune", "--class", "red", "--out", str(tmp_path / "x"), "--model", tiny_spec]) == 2
    assert "NAME=IMAGE" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--from-index",
                str(tmp_path / "no-index"),
                "--class",
                spec,
                "--class",
                f"green={photos_by_class['green'][0]}",
                "--out",
                str(tmp_path / "x"),
                "--model",
                tiny_spec,
            ]
        )
        == 2
    )
    assert "no-index" in capsys.readouterr().err
