"""One source of truth for the fine-tune settings: `FinetuneConfig`'s field metadata makes the CLI's `finetune` flags
and the Fine-tune tab's controls, so their defaults, choices and names cannot drift from the dataclass."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clipapp.app.cli import build_parser
from clipapp.app.cli.arguments import finetune_config as _finetune_config
from clipapp.errors import ClipAppError
from clipapp.finetune.config import (
    MODE_DEFAULTS,
    NAMED_LOSSES,
    FinetuneConfig,
    loss_settings,
    settings,
)

REPO = Path(__file__).resolve().parents[3]
# The flags `finetune` had before they were generated (docs/ and scripts use them): flag -> field
FLAGS_BEFORE = {
    "--mode": "mode",
    "--templates": "templates",
    "--epochs": "epochs",
    "--lr": "lr",
    "--shots-val": "val_per_class",
    "--blocks": "blocks",
    "--views": "views",
    "--mix-space": "mix_space",
    "--mixup": "mixup",
    "--cutmix": "cutmix",
    "--label-smoothing": "label_smoothing",
    "--ema": "ema",
    "--sam": "sam",
    "--focal": "focal",
    "--class-balanced": "class_balanced",
    "--clip-grad": "clip_grad",
    "--wise-alpha": "wise_alpha",
    "--patience": "patience",
    "--seed": "seed",
}
# The /finetune endpoint's parameters before the tab was generated (gradio_client scripts use the names)
API_BEFORE = [
    "zip_file",
    "class_1",
    "images_1",
    "class_2",
    "images_2",
    "class_3",
    "images_3",
    "class_4",
    "images_4",
    "mode",
    "epochs",
    "blocks",
    "mixup",
    "label_smoothing",
    "ema",
    "sam",
    "loss",
    "wise_alpha",
    "seed",
]

API_ADDED = ["budget"]  # the parameters added since, in order


def _finetune_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices["finetune"]


def _parse(*flags: str):
    parser, _ = _finetune_parser()
    return parser.parse_args(["finetune", "data", "--out", "out", *flags])


def test_every_setting_has_a_flag_with_the_dataclass_default_and_choices():
    _, finetune = _finetune_parser()
    actions = {a.dest: a for a in finetune._actions}
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    assert set(settings()) == set(fields)  # every field is a setting: none left to be set by hand
    for name, spec in settings().items():
        action = actions[name]
        assert spec.flag in action.option_strings
        assert action.default == fields[name].default, name
        assert tuple(action.choices or ()) == spec.setting.choices, name


def test_the_flags_that_existed_keep_their_names_and_meaning():
    _, finetune = _finetune_parser()
    by_flag = {flag: a.dest for a in finetune._actions for flag in a.option_strings}
    for flag, field_name in FLAGS_BEFORE.items():
        assert by_flag[flag] == field_name
    config = _finetune_config(
        _parse(
            "--mode",
            "head",
            "--shots-val",
            "3",
            "--focal",
            "2",
            "--class-balanced",
            "0.99",
            "--wise-alpha",
            "0.25",
            "--templates",
            "a photo of {}.",
        )
    )
    assert (config.mode, config.val_per_class, config.focal, config.class_balanced) == ("head", 3, 2.0, 0.99)
    assert config.wise_alpha == 0.25 and config.templates == "a photo of {}."


def test_help_shows_each_default():
    _, finetune = _finetune_parser()
    text = " ".join(finetune.format_help().split())
    for spec in settings().values():
        assert spec.flag in text
        assert f"(default: {spec.default_text()})" in text, spec.name
    assert "(default: 0.6)" in text  # lr: the dataclass's, spelled out
    assert "(default: the strongest that fits the budget)" in text  # mode: the planner's (clipapp/finetune/plan.py)
    assert "(default: 60 s on a CPU, 300 s on a GPU)" in text
    assert "(default: the mode's: head 80, cache 80, partial 30)" in text


def test_the_cli_builds_the_same_config_as_the_dataclass():
    assert _finetune_config(_parse()) == FinetuneConfig().validate()
    flags = (
        "--mode",
        "head",
        "--epochs",
        "7",
        "--lr",
        "0.3",
        "--no-refit",
        "--monitor",
        "val_acc",
        "--seed",
        "4",
        "--mixup",
        "0",
        "--cache-alpha",
        "auto",
    )
    expected = FinetuneConfig(mode="head", epochs=7, lr=0.3, refit=False, monitor="val_acc", seed=4, mixup=0.0)
    assert _finetune_config(_parse(*flags)) == expected
    # a mode-dependent setting left out is the chosen mode's own, not the default mode's
    assert _finetune_config(_parse("--mode", "head")).epochs == MODE_DEFAULTS["head"]["epochs"]
    assert _finetune_config(_parse("--mode", "partial", "--max-folds", "auto")).max_folds == 3


def test_a_bad_flag_value_is_a_usage_error_naming_the_setting(capsys):
    for flags in (("--epochs", "many"), ("--epochs", "2.5"), ("--mode", "full"), ("--wise-alpha", "half")):
        with pytest.raises(SystemExit) as exit_info:
            _parse(*flags)
        assert exit_info.value.code == 2
    assert "epochs" in capsys.readouterr().err
    with pytest.raises(ClipAppError, match="EMA decay"):
        _finetune_config(_parse("--ema", "1.5"))  # parsed, then refused by validate


def test_settings_parse_page_and_cli_values():
    parsed = FinetuneConfig.from_settings({"epochs": 3.0, "blocks": "2", "wise_alpha": "auto", "seed": None})
    assert (parsed.epochs, parsed.blocks, parsed.wise_alpha, parsed.seed) == (3, 2, None, 0)
    with pytest.raises(ClipAppError, match="whole number"):
        FinetuneConfig.from_settings({"blocks": 1.5})
    with pytest.raises(ClipAppError, match="Unknown"):
        FinetuneConfig.from_settings({"learning_rate": 1})


def test_every_adapter_ever_written_stores_a_config_that_still_reads():
    files = [p for p in (REPO / "tests" / "data" / "adapters").glob("format*/*.json") if p.name != "expected.json"]
    assert len(files) >= 8
    for path in files:
        stored = json.loads(path.read_text())["config"]
        config = FinetuneConfig.from_dict(stored)
        assert config.mode == stored["mode"] and config.focal == stored["focal"], path


def test_loss_by_name_turns_on_its_setting_at_its_metadata_value():
    assert loss_settings("cross-entropy") == {name: 0.0 for name in NAMED_LOSSES}
    assert loss_settings("focal") == {"focal": settings()["focal"].setting.example, "class_balanced": 0.0}
    assert loss_settings("class-balanced")["class_balanced"] == settings()["class_balanced"].setting.example
    with pytest.raises(ClipAppError, match="Loss must be one of"):
        loss_settings("hinge")


def test_the_settings_module_loads_no_training_code():
    """The CLI's parser imports clipapp.finetune.config: the package must not drag in its torch modules (the CLI
    start-up test checks torch itself) nor Gradio."""
    code = (
        "import sys, clipapp.finetune.config, clipapp.finetune as f; "
        "print([m for m in sys.modules if m.startswith('clipapp.finetune.') or m == 'gradio'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "['clipapp.finetune.config']"


def test_the_package_exports_load_lazily_and_all_resolve():
    import clipapp.finetune as package

    tree = ast.parse(Path(package.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If))  # the `if TYPE_CHECKING:` imports
    typed = {alias.name for node in guarded.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert typed == set(package._LAZY)
    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


# -- the Fine-tune tab ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tab(tiny_service, tmp_path_factory):
    """The Fine-tune tab's Blocks, built (not launched) with its controls."""
    import gradio as gr

    from clipapp.app.ui.common import AppContext
    from clipapp.app.ui.finetune_settings import SETTING_NAMES
    from clipapp.app.ui.finetune_tab import build_tab

    ctx = AppContext(service=tiny_service, state_dir=tmp_path_factory.mktemp("state"))
    with gr.Blocks() as demo:
        handles = build_tab(ctx, gr.State())
    return demo, dict(zip(SETTING_NAMES, handles.settings, strict=True))


def test_the_tabs_controls_carry_the_dataclass_defaults_and_metadata(tab):
    from clipapp.app.ui.finetune_settings import LOSS

    _, controls = tab
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    for name, control in controls.items():
        if name == LOSS:
            assert control.value == "cross-entropy"  # the dataclass's focal and class_balanced are 0
            continue
        spec, default = settings()[name], fields[name].default
        if default is None:  # the mode's schedule, or the planner's choice within the budget
            assert control.value == "auto"
        else:
            assert control.value == default, name
        assert control.label == (spec.setting.label or spec.setting.help)
        if spec.setting.control.kind == "slider":
            ui = spec.setting.control
            assert (control.minimum, control.maximum, control.step) == (ui.minimum, ui.maximum, ui.step)
        if spec.setting.choices:
            automatic = ["auto"] if spec.optional else []
            assert [value for _, value in control.choices] == [*automatic, *spec.setting.choices]


def test_the_page_left_as_it_is_makes_the_default_config(tab):
    from clipapp.app.ui.finetune_settings import make_config

    _, controls = tab
    assert make_config({name: control.value for name, control in controls.items()}) == FinetuneConfig().validate()


def test_choosing_focal_on_the_page_gives_the_configs_value_not_a_ui_constant(tab, monkeypatch):
    from clipapp.app.ui.finetune_settings import make_config

    _, controls = tab
    page = {name: control.value for name, control in controls.items()}
    chosen = make_config({**page, "loss": "focal"})
    assert chosen.focal == settings()["focal"].setting.example > 0 and chosen.class_balanced == 0.0
    balanced = make_config({**page, "loss": "class-balanced"})
    assert balanced.class_balanced == settings()["class_balanced"].setting.example and balanced.focal == 0.0
    focal = settings()["focal"]  # change the metadata's value: the page follows it
    monkeypatch.setitem(
        settings(), "focal", dataclasses.replace(focal, setting=dataclasses.replace(focal.setting, example=3.5))
    )
    assert make_config({**page, "loss": "focal"}).focal == 3.5


def test_the_finetune_api_keeps_its_parameter_names(tiny_service, tmp_path):
    from clipapp.app.ui import build_app
    from clipapp.app.ui.common import AppContext

    api = build_app(AppContext(service=tiny_service, state_dir=tmp_path)).get_api_info()["named_endpoints"]
    finetune = {p["parameter_name"]: p for p in api["/finetune"]["parameters"]}
    assert list(finetune) == [*API_BEFORE, *API_ADDED]  # new settings come last: positional calls keep working
    assert all(p["parameter_has_default"] for p in finetune.values())
    selection = [p["parameter_name"] for p in api["/finetune_selection"]["parameters"]]
    assert selection == ["selection_", "source_", *API_BEFORE[9:], *API_ADDED]
