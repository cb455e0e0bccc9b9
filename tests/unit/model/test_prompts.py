from __future__ import annotations

import pytest

from clipapp.errors import ClipAppError
from clipapp.model.prompts import fill_template, parse_labels, resolve_templates


def test_parse_labels_splits_and_strips():
    assert parse_labels("cat, dog\n  a  red car ,\n") == ["cat", "dog", "a red car"]
    assert parse_labels(["x", " y "]) == ["x", "y"]


@pytest.mark.parametrize(
    "bad, message", [("", "No labels"), ("a,A", "Duplicate"), ("ok,\x07bell", "control"), ("x" * 400, "limit")]
)
def test_parse_labels_refuses(bad, message):
    with pytest.raises(ClipAppError, match=message):
        parse_labels(bad)


def test_template_sets_and_custom():
    assert len(resolve_templates("simple")) == 7
    assert len(resolve_templates("openai")) == 80
    assert resolve_templates("a sketch of a {}.") == ("a sketch of a {}.",)
    with pytest.raises(ClipAppError, match="exactly one"):
        resolve_templates("no placeholder")


def test_fill_template_keeps_braces_in_labels():
    assert fill_template("a photo of a {}.", "set {x}") == "a photo of a set {x}."
