"""Which model a command over an index loads when none is named: the one the index was built with."""

from __future__ import annotations

import json

from clipapp.app.cli import main
from tests.support.cli_index import indexed_copy


def test_an_index_keeps_the_model_it_was_built_with_when_no_model_is_named(capsys, tiny_spec, photos, tmp_path):
    """The default model changed (ViT-B-32 laion2b -> ViT-B-32-256 DataComp): an index built before still searches
    without --model, with its own model rather than a mismatch error."""
    _, index = indexed_copy(photos[:3], tmp_path, tiny_spec, capsys)
    assert main(["search", "--index", str(index), "--text", "a photo", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
