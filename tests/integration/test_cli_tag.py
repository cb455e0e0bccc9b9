"""`clipapp tag`: a selection (arguments or a --from file, as the map page lists it) gets a tag that `search --tag`
then filters by; a path outside the index is one error line."""

from __future__ import annotations

import json

from clipapp.app.cli import main
from tests.support.cli_index import indexed_copy


def test_tag_then_search_by_the_tag(capsys, tiny_spec, photos, tmp_path):
    folder, index = indexed_copy(photos[:5], tmp_path, tiny_spec, capsys)
    selection = tmp_path / "selected.txt"
    selection.write_text(f"{folder / photos[1].name}\n{folder / photos[3].name}\n", encoding="utf-8")
    argv = ["tag", str(folder / photos[0].name), "--from", str(selection), "--index", str(index), "--tag", "best"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tag": "best", "tagged": 3, "total": 3}
    search = ["search", "--index", str(index), "--text", "a photo", "--tag", "best", "--model", tiny_spec, "--json"]
    assert main(search) == 0
    found = {hit["path"] for hit in json.loads(capsys.readouterr().out)["results"]}
    assert found == {str(folder / photos[i].name) for i in (0, 1, 3)}
    assert main(["tag", "/elsewhere/x.jpg", "--index", str(index), "--tag", "best"]) == 2
    assert "Cannot tag /elsewhere/x.jpg: it is not in the index" in capsys.readouterr().err
    assert main(["tag", str(folder / photos[2].name), "--index", str(index), "--tag", "best"]) == 0
    assert "tagged 1 images 'best'; 4 images" in capsys.readouterr().out
