"""`clipapp map`: the JSON contract, the HTML page, the cache beside the index, and a clear error without an index.
Slow: UMAP compiles its numba kernels on first use."""

from __future__ import annotations

import json

import pytest

from clipapp.app.cli import main
from tests.support.cli_index import indexed_copy

pytestmark = pytest.mark.slow


def test_map_json_html_and_cache(capsys, tiny_spec, photos, tmp_path):
    folder, index = indexed_copy(photos[:8], tmp_path, tiny_spec, capsys)
    argv = ["map", "--index", str(index), "--model", tiny_spec, "--labels", "cat,dog,car", "--clusters", "2"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(p["path"] for p in data["points"]) == sorted(str(folder / p.name) for p in photos[:8])
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 and p["cluster"] in (0, 1) for p in data["points"])
    assert [c["id"] for c in data["clusters"]] == [0, 1] and sum(c["size"] for c in data["clusters"]) == 8
    assert {c["name"].split()[0] for c in data["clusters"]} <= {"cat", "dog", "car"}
    assert [p.name for p in index.iterdir() if p.name.startswith("map-")]  # cached beside the index
    out = tmp_path / "map.html"
    assert main([*argv, "--out", str(out)]) == 0
    assert "images of" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert "clipappMap(" in page and photos[0].name in page and "file://" in page


def test_map_without_index_is_a_user_error(capsys, tiny_spec, tmp_path):
    assert main(["map", "--index", str(tmp_path / "none"), "--model", tiny_spec]) == 2
    assert "No index at" in capsys.readouterr().err
