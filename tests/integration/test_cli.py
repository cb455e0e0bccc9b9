"""The CLI: JSON contracts of docs/architecture.md, PNG output, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from clipapp.app.cli import main
from tests.support.paths import REPO_DIR


def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_classify_json_contract(capsys, tiny_spec, photos, tmp_path):
    out_png = tmp_path / "bars.png"
    result = run_json(
        capsys,
        "classify",
        str(photos[0]),
        str(photos[1]),
        "--labels",
        "cat, rocket,dog",
        "--top-k",
        "2",
        "--model",
        tiny_spec,
        "--json",
        "--out",
        str(out_png),
    )
    assert result["model"] == tiny_spec
    assert [r["image"] for r in result["results"]] == [str(photos[0]), str(photos[1])]
    for item in result["results"]:
        assert len(item["top"]) == 2
        assert {t["label"] for t in item["top"]} <= {"cat", "rocket", "dog"}
        assert item["top"][0]["prob"] >= item["top"][1]["prob"]
    assert Image.open(out_png).size[0] > 100


def test_similarity_json_contract(capsys, tiny_spec, photos, tmp_path):
    out_png = tmp_path / "heatmap.png"
    result = run_json(
        capsys,
        "similarity",
        *map(str, photos[:3]),
        "--texts",
        "a cat",
        "a rocket",
        "--model",
        tiny_spec,
        "--json",
        "--out",
        str(out_png),
    )
    assert result["texts"] == ["a cat", "a rocket"]
    assert len(result["matrix"]) == 3 and all(len(row) == 2 for row in result["matrix"])
    assert all(-1.0 <= v <= 1.0 for row in result["matrix"] for v in row)
    assert Image.open(out_png).size[0] > 100


@pytest.mark.parametrize(
    "labels, message",
    [(",, ,", "No labels"), ("cat,dog,cat", "Duplicate"), (",".join(f"l{i}" for i in range(2000)), "at most 1000")],
)
def test_bad_labels_exit_2_with_message(capsys, tiny_spec, photos, labels, message):
    assert main(["classify", str(photos[0]), "--labels", labels, "--model", tiny_spec, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_label_longer_than_context(capsys, tiny_spec, photos):
    long_label = " ".join(["word"] * 60)
    assert main(["classify", str(photos[0]), "--labels", f"cat,{long_label}", "--model", tiny_spec]) == 2
    assert "tokens" in capsys.readouterr().err


def test_real_entry_point_reports_bad_image_without_traceback(tmp_path, tiny_spec):
    bad = tmp_path / "fake.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    # the model loads first now (files are streamed after it): the subprocess needs the tiny model's config
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_DIR), CLIPAPP_MODEL_CONFIGS=str(REPO_DIR / "tests" / "data")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "clipapp", "classify", str(bad), "--labels", "a,b", "--model", tiny_spec, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "fake.png" in proc.stderr and "Traceback" not in proc.stderr


def test_index_and_search_commands(capsys, tiny_spec, photos, tmp_path):
    folder, index = tmp_path / "pics", tmp_path / "index"
    folder.mkdir()
    for photo in photos[:4]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_bytes(b"nope")
    first = run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")
    assert (first["added"], first["removed"], first["total"]) == (4, 0, 4)
    assert first["skipped"] == [str(folder / "broken.jpg")]
    again = run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")
    assert (again["added"], again["updated"], again["total"]) == (0, 0, 4)
    (folder / photos[0].name).unlink()
    assert run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")["removed"] == 1

    by_image = run_json(
        capsys,
        "search",
        "--index",
        str(index),
        "--image",
        str(folder / photos[1].name),
        "-k",
        "2",
        "--model",
        tiny_spec,
        "--json",
    )
    assert by_image["results"][0]["path"] == str(folder / photos[1].name)
    assert by_image["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    by_text = run_json(
        capsys, "search", "--index", str(index), "--text", "cat + snow - grass", "--model", tiny_spec, "--json"
    )
    assert len(by_text["results"]) == 3
    assert {"id", "path", "score", "aliases"} == set(by_text["results"][0])


def test_index_json_is_the_sync_report(capsys, tiny_spec, photos, tmp_path):
    from clipapp.index import SyncReport

    folder, index = tmp_path / "pics", tmp_path / "index"
    folder.mkdir()
    (folder / photos[0].name).write_bytes(photos[0].read_bytes())
    (folder / "copy.jpg").write_bytes(photos[0].read_bytes())
    (folder / "broken.jpg").write_bytes(b"nope")
    report = run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")
    assert list(report) == list(SyncReport().to_dict())
    assert (report["added"], report["updated"], report["removed"], report["total"]) == (2, 0, 0, 2)
    assert report["skipped"] == [str(folder / "broken.jpg")] and list(report["errors"]) == report["skipped"]
    assert report["errors"][str(folder / "broken.jpg")]  # why it was skipped, not an empty string
    assert main(["index", str(folder), "--index", str(index), "--model", tiny_spec]) == 0
    text = capsys.readouterr().out
    assert "added 0, updated 0, removed 0, skipped 1; 2 images in" in text
    assert f"skipped: {folder / 'broken.jpg'}: {report['errors'][str(folder / 'broken.jpg')]}" in text


def test_search_refuses_an_index_of_another_model(capsys, tiny_spec, photos, tmp_path):
    index = tmp_path / "index"
    assert main(["index", str(photos[0].parent), "--index", str(index), "--model", tiny_spec, "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--text", "cat", "--model", "clipapp-tiny:random"]) == 2
    assert "rebuild it or start the app with --model" in capsys.readouterr().err


def test_index_compact_backup_export_and_from_embeddings(capsys, tiny_spec, photos, tmp_path):
    """The archive commands end to end on a real model: compaction after a removal, a backup, an export and an
    index built from it without encoding, each searching as the original does."""
    import shutil

    folder, index = tmp_path / "pics", tmp_path / "index"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")
    (folder / photos[0].name).unlink()
    assert run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")["removed"] == 1

    compacted = run_json(capsys, "index", "--index", str(index), "--compact", "--json")
    assert list(compacted) == ["images", "dead_rows", "bytes_before", "bytes_after", "seconds"]
    assert compacted["images"] == len(photos) - 1 and compacted["dead_rows"] == 1
    search = ["search", "--index", str(index), "--text", "a photo", "-k", "3", "--model", tiny_spec, "--json"]
    expected = run_json(capsys, *search)["results"]
    assert len(expected) == 3

    backup = run_json(capsys, "index", "--index", str(index), "--backup", str(tmp_path / "copy"), "--json")
    assert (backup["dest"], backup["images"]) == (str(tmp_path / "copy"), len(photos) - 1)
    search[2] = str(tmp_path / "copy")
    assert run_json(capsys, *search)["results"] == expected

    exported = run_json(capsys, "export", "--index", str(index), "--format", "npy", str(tmp_path / "emb"), "--json")
    assert (exported["images"], exported["parts"], exported["format"]) == (len(photos) - 1, 1, "npy")
    assert (tmp_path / "emb" / "img_emb" / "img_emb_0.npy").exists()
    imported = run_json(
        capsys,
        "index",
        "--index",
        str(tmp_path / "new"),
        "--from-embeddings",
        str(tmp_path / "emb"),
        "--model",
        tiny_spec,
        "--json",
    )
    assert (imported["added"], imported["total"]) == (len(photos) - 1, len(photos) - 1)
    search[2] = str(tmp_path / "new")
    assert run_json(capsys, *search)["results"] == expected

    assert main(["index", "--index", str(index), "--compact"]) == 0
    assert "0 dead rows dropped" in capsys.readouterr().out
    assert main(["index", "--index", str(index)]) == 2
    assert "Give the image FOLDER" in capsys.readouterr().err
    assert (
        main(
            [
                "index",
                "--index",
                str(tmp_path / "other"),
                "--from-embeddings",
                str(tmp_path / "emb"),
                "--model",
                "clipapp-tiny:random",
            ]
        )
        == 2
    )
    assert f"embeddings of model {tiny_spec}" in capsys.readouterr().err
    assert main(["export", "--index", str(tmp_path / "none"), str(tmp_path / "x")]) == 2
    assert "No index at" in capsys.readouterr().err


def test_duplicates_json_csv_move_and_undo(capsys, tiny_spec, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    copy = folder / f"copy-of-{photos[0].name}"
    copy.write_bytes(photos[0].read_bytes())
    index = str(tmp_path / "index")
    run_json(capsys, "index", str(folder), "--index", index, "--model", tiny_spec, "--json")
    found = run_json(capsys, "duplicates", "--index", index, "--csv", str(tmp_path / "d.csv"), "--json")
    group = next(g for g in found["groups"] if str(copy) in g["paths"])
    assert set(group["paths"]) >= {str(copy), str(folder / photos[0].name)} and group["keep"] in group["paths"]
    assert [image["path"] for image in group["images"]] == group["paths"]
    assert str(copy) in (tmp_path / "d.csv").read_text()
    moved = run_json(capsys, "duplicates", "--index", index, "--move-to", str(tmp_path / "aside"), "--json")
    assert len(moved["moved"]) >= 1 and not os.path.exists(moved["moved"][0]["from"])
    restored = run_json(capsys, "duplicates", "--undo", moved["log"], "--json")
    assert sorted(r["to"] for r in restored["moved"]) == sorted(m["from"] for m in moved["moved"])
    assert main(["duplicates", "--index", str(tmp_path / "nothing"), "--json"]) == 2
    assert "No index" in capsys.readouterr().err


def test_search_filters_and_sort_by_date(capsys, tiny_spec, photos, tmp_path):
    folder, index = tmp_path / "pics", tmp_path / "index"
    days = {}
    for i, photo in enumerate(photos[:4]):  # two folders; no EXIF dates, so each file's mtime is its date
        target = folder / ("old" if i < 2 else "new") / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.read_bytes())
        stamp = time.mktime((2020 + i, 6, 15, 12, 0, 0, 0, 0, -1))
        os.utime(target, (stamp, stamp))
        days[str(target)] = 2020 + i
    run_json(capsys, "index", str(folder), "--index", str(index), "--model", tiny_spec, "--json")
    base = ["search", "--index", str(index), "--text", "a cat", "--model", tiny_spec, "--json"]

    under = run_json(capsys, *base, "--under", str(folder / "new"))["results"]
    assert sorted(hit["path"] for hit in under) == sorted(p for p in days if "/new/" in p)
    dated = run_json(capsys, *base, "--after", "2021-06-15", "--before", "2022-06-15")["results"]
    assert sorted(days[hit["path"]] for hit in dated) == [2021, 2022]  # both ends inclusive
    by_score = run_json(capsys, *base, "--min-score", "-1")["results"]
    by_date = run_json(capsys, *base, "--min-score", "-1", "--sort", "date")["results"]
    assert sorted(h["path"] for h in by_date) == sorted(h["path"] for h in by_score)
    assert [days[h["path"]] for h in by_date] == [2023, 2022, 2021, 2020]
    assert {"id", "path", "score", "aliases"} == set(by_date[0])  # the JSON shape is unchanged
    cut_off = str(by_score[1]["score"] - 1e-5)  # the JSON rounds scores to 6 decimals
    cut = run_json(capsys, *base, "--min-score", cut_off, "--sort", "date")["results"]
    assert sorted(h["path"] for h in cut) == sorted(h["path"] for h in by_score[:2])  # cut first, then sorted

    assert main([*base, "--after", "2021-02-30"]) == 2
    err = capsys.readouterr().err
    assert "--after '2021-02-30' is not a date" in err and "YYYY-MM-DD" in err and "Traceback" not in err
