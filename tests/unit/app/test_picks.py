"""The Search tab's picks (clipapp/app/picks.py) without Gradio or a model: their text forms, select-mode clicks,
the index check, and the pre-0.2 names in clipapp.finetune.intake."""

from __future__ import annotations

import pytest

from clipapp.app import picks
from clipapp.errors import ClipAppError


class FakeIndex:
    """What the picks need of an index: `record(path)`, None for a path it does not hold."""

    def __init__(self, paths):
        self.paths = set(paths)

    def record(self, path):
        return object() if path in self.paths else None


def test_picks_read_back_from_lines_json_or_a_mapping():
    assert picks.parse_picks(None) == picks.parse_picks("  ") == {}
    assert picks.parse_picks("a=x.png,y.png\nb=z.png\na=w.png") == {"a": ["x.png", "y.png", "w.png"], "b": ["z.png"]}
    assert picks.parse_picks('{" big  cat ": ["x.png"]}') == {"big cat": ["x.png"]}
    assert picks.parse_picks(picks.picks_text({"a": ["x"], "b": []})) == {"a": ["x"]}
    with pytest.raises(ClipAppError, match="not valid JSON"):
        picks.parse_picks("{nope")
    with pytest.raises(ClipAppError, match="must map class names"):
        picks.parse_picks({"a": "x.png"})


def test_a_click_in_select_mode_toggles_the_path():
    assert picks.toggle_pick("", "a") == "a"
    assert picks.toggle_pick("a\nb", "c") == "a\nb\nc"
    assert picks.toggle_pick("a\n\nb", "a") == "b"
    assert picks.picked_paths(" a \n\n b\n") == ["a", "b"]


def test_only_images_of_the_index_can_be_picked():
    index = FakeIndex(["a", "b", "c"])
    classes = picks.add_picks({"x": ["a", "b"]}, "y", ["b", "c"], index)
    assert classes == {"x": ["a"], "y": ["b", "c"]}
    with pytest.raises(ClipAppError, match="Not images of the selected index: /etc/passwd"):
        picks.add_picks({}, "y", ["/etc/passwd"], index)
    with pytest.raises(ClipAppError, match="'=' is not allowed"):
        picks.add_picks({}, "a=b", ["a"], index)
    with pytest.raises(ClipAppError, match="comma"):
        picks.add_picks({}, "y", ["a,b"], index)
    with pytest.raises(ClipAppError, match="Not images of the selected index"):
        picks.labelled_picks({"x": ["a"], "y": ["/etc/passwd"]}, index)
    with pytest.raises(ClipAppError, match="No classes collected"):
        picks.labelled_picks("", index)


def test_the_old_names_in_finetune_intake_still_answer_with_a_warning():
    from clipapp.finetune import intake

    for old, new in [
        ("parse_selection", "parse_picks"),
        ("selection_text", "picks_text"),
        ("add_to_selection", "add_picks"),
        ("labelled_selection", "labelled_picks"),
        ("unindexed", "unindexed"),
        ("check_index", "check_index"),
    ]:
        with pytest.warns(DeprecationWarning, match=f"clipapp.app.picks.{new}"):
            assert getattr(intake, old) is getattr(picks, new)
    with pytest.raises(AttributeError):
        intake.no_such_name  # noqa: B018
