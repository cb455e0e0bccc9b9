"""`clipapp models`: the catalog as a table and as JSON, loading no model."""

from __future__ import annotations

import json

from clipapp.app.actions import models as models_action
from clipapp.app.cli import main
from clipapp.model import catalog
from clipapp.model.spec import DEFAULT_SPEC


def run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_json_lists_every_model_with_the_default_and_the_selected_one_marked(capsys):
    out = json.loads(run(capsys, "models", "--json", "--model", "ViT-L-14:datacomp_xl_s13b_b90k"))
    assert [row["spec"] for row in out["models"]] == [m.spec for m in catalog.MODELS]
    assert out["default"] == DEFAULT_SPEC
    assert [row["spec"] for row in out["models"] if row["default"]] == [DEFAULT_SPEC]
    assert [row["spec"] for row in out["models"] if row["selected"]] == ["ViT-L-14:datacomp_xl_s13b_b90k"]
    assert out["measured_on"] and out["measured_at"]
    measured = catalog.measured_figures()["models"]
    for row in out["models"]:
        assert row["license"] and row["accuracy_source"] and row["imagenet_zero_shot_top1"]
        stored = measured.get(row["spec"])
        if stored is None:
            assert row["measured"]["fp32"] == {} and row["params_m"] is None
            continue
        runs = sorted(stored["fp32"]["images_per_s"])
        assert row["measured"]["fp32"]["images_per_s"] == runs[len(runs) // 2]  # the median of 1 or 3 runs
        assert row["runs"] == stored


def test_table_marks_the_default_and_the_model_the_flags_select(capsys, monkeypatch):
    monkeypatch.setenv("CLIPAPP_MODEL", "MobileCLIP2-S0:dfndr2b")
    specs = {m.spec for m in catalog.MODELS}
    lines = run(capsys, "models").splitlines()
    rows = {line[2:].split()[0]: line[:2] for line in lines if line[2:].split() and line[2:].split()[0] in specs}
    assert set(rows) == specs
    assert rows[DEFAULT_SPEC] == "* " and rows["MobileCLIP2-S0:dfndr2b"] == " >"
    assert sum("*" in mark for mark in rows.values()) == 1


def test_without_the_hf_extra_those_models_say_how_to_get_it(capsys, monkeypatch):
    monkeypatch.setattr(models_action, "hf_extra_installed", lambda: False)
    out = json.loads(run(capsys, "models", "--json"))
    for row in out["models"]:
        assert row["loadable"] == (not row["needs_hf_extra"])
        assert (row["why_not"] is not None) == row["needs_hf_extra"]
    assert "pip install 'clipapp[hf]'" in run(capsys, "models")


def test_without_measured_figures_the_table_still_prints(capsys, monkeypatch):
    empty = {"date": None, "machine": None, "method": None, "models": {}}
    monkeypatch.setattr(models_action, "measured_figures", lambda: empty)
    out = json.loads(run(capsys, "models", "--json"))
    assert all(row["measured"]["fp32"] == {} and row["params_m"] is None for row in out["models"])
    assert DEFAULT_SPEC in run(capsys, "models")


def test_the_command_loads_no_model(capsys, monkeypatch):
    from clipapp.model import loading

    def refuse(*_args, **_kwargs):
        raise AssertionError("clipapp models loaded a model")

    monkeypatch.setattr(loading, "load_model", refuse)
    assert DEFAULT_SPEC in run(capsys, "models", "--model", "ViT-L-14:datacomp_xl_s13b_b90k")


def test_the_page_table_marks_the_default_and_this_server():
    from clipapp.app.ui.models_view import table_markdown

    rows = table_markdown(models_action.list_models("MobileCLIP2-S2:dfndr2b")).splitlines()
    default = next(row for row in rows if DEFAULT_SPEC in row)
    assert f"**`{DEFAULT_SPEC}`** (default)" in default and "this server" not in default
    assert "← this server" in next(row for row in rows if "MobileCLIP2-S2:dfndr2b" in row)
    assert sum(row.startswith("| ") for row in rows) == len(catalog.MODELS) + 1  # the header and one row each
