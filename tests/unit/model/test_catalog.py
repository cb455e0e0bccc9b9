"""The catalog of real models (clipapp/model/catalog.py) agrees with open_clip and with the default spec, and its
measured figures (catalog_figures.json, written by bench/bench_models.py) are whole."""

from __future__ import annotations

from clipapp.model import catalog
from clipapp.model.spec import DEFAULT_SPEC, parse_spec


def test_every_spec_is_an_open_clip_pretrained_tag():
    for model in catalog.MODELS:
        parsed = parse_spec(model.spec)
        assert parsed.kind == "pretrained", model.spec
    assert len({m.spec for m in catalog.MODELS}) == len(catalog.MODELS)


def test_the_default_is_in_the_catalog_with_a_license_anyone_may_use():
    default = catalog.find(DEFAULT_SPEC)
    assert default is not None
    assert default.open_license and default.imagenet_top1 is not None
    assert catalog.find("no-such:model") is None


def test_every_published_figure_names_its_source():
    for model in catalog.MODELS:
        assert model.license and model.license_source, model.spec
        if model.imagenet_top1 is not None:
            assert 0 < model.imagenet_top1 < 100 and model.accuracy_source, model.spec


def test_the_models_with_a_hugging_face_tokenizer_are_marked():
    import open_clip

    for model in catalog.MODELS:
        text_cfg = open_clip.get_model_config(model.name)["text_cfg"]
        uses_hf = bool(text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"))
        assert model.needs_hf == uses_hf, model.spec


def test_the_measured_figures_are_whole_and_say_where_and_when():
    """Every measured model has every load and speed figure, one value per run; the default is measured. (A model
    the bench has not run yet shows dashes: tests/unit/app/test_models_command.py.)"""
    figures = catalog.measured_figures()
    assert figures["date"] and figures["machine"] and figures["method"]
    assert DEFAULT_SPEC in figures["models"]
    assert set(figures["models"]) <= {m.spec for m in catalog.MODELS}
    for spec, measured in figures["models"].items():
        assert measured["params_m"] > 1
        for precision in ("fp32", "int8"):
            for key in ("load_s", "rss_mb", "images_per_s", "texts_per_s"):
                runs = measured[precision][key]
                assert len(runs) == measured["runs"] and all(value > 0 for value in runs), (spec, key)
        # the fine-tune is optional (`bench_models.py --no-finetune`: a dash in the table), never empty or zero
        for key in ("finetune_head_s", "finetune_default_s"):
            assert measured.get(key, [1.0]) and all(v > 0 for v in measured.get(key, [])), (spec, key)
        if "finetune_default_s" in measured:  # the default fine-tune says which plan the planner chose
            assert measured["finetune_default_plan"] and all(
                "epochs" in p or "cache" in p for p in measured["finetune_default_plan"]
            ), spec
