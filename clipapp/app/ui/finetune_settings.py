"""The Fine-tune tab's settings: its controls drawn from `FinetuneConfig`'s field metadata, the config made from
their values by field name, and the event handlers whose API parameters are those names. The settings themselves
(defaults, ranges, choices, help) live in clipapp/finetune/config.py; this module only turns them into Gradio.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Sequence

import gradio as gr

from clipapp.finetune.config import (
    NAMED_LOSSES,
    FinetuneConfig,
    loss_name,
    loss_names,
    loss_settings,
    settings,
)

DEFAULTS = FinetuneConfig()
LOSS = "loss"  # the one page setting that is not a field: a loss by name (FinetuneConfig's NAMED_LOSSES)
# The settings the page shows, row by row, by FinetuneConfig field name: how each is drawn (slider range, choices,
# label, info, default) is its field's metadata. In this order they are also the /finetune API's parameters.
PAGE_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("mode",),
    ("epochs", "blocks"),
    ("mixup", "label_smoothing"),
    ("ema", "sam"),
    (LOSS,),
    ("wise_alpha", "seed"),
    ("budget",),  # last: the API's parameters keep their positions
)
SETTING_NAMES = tuple(name for row in PAGE_SETTINGS for name in row)
SettingControl = gr.Slider | gr.Number | gr.Radio | gr.Dropdown  # the kinds a `Control` names


def make_config(values: Mapping[str, Any]) -> FinetuneConfig:
    """The page's settings by name (as Gradio sends them: sliders as floats, "auto" for None) -> the config; the
    loss by name becomes its settings at their metadata's values (`loss_settings`)."""
    values = dict(values)
    loss = values.pop(LOSS, None) or loss_name(DEFAULTS)
    return FinetuneConfig.from_settings({**values, **loss_settings(str(loss))})


def page_value(name: str) -> Any:
    """A control's initial value: the field's default, "auto" where that is automatic (the planner's choice within
    the budget, or the chosen mode's own schedule)."""
    if name == LOSS:
        return loss_name(DEFAULTS)
    spec = settings()[name]
    return "auto" if spec.default is None else spec.default


def api_default(name: str) -> Any:
    """A setting's default in the API: the page's, except that an automatic one left out is None (the same)."""
    return None if name != LOSS and settings()[name].default is None else page_value(name)


def _loss_control() -> gr.Radio:
    examples = [settings()[field] for field in NAMED_LOSSES]
    return gr.Radio(
        list(loss_names()),
        value=page_value(LOSS),
        label="Loss",
        info="; ".join(f"{spec.flag.removeprefix('--')}: {spec.describe()}" for spec in examples),
    )


def settings_control(name: str) -> SettingControl:
    """The page's control for a setting, drawn from its field's metadata (`Setting.control`)."""
    if name == LOSS:
        return _loss_control()
    spec = settings()[name]
    control = spec.setting.control
    if control is None:
        raise ValueError(f"FinetuneConfig.{name} has no page control in its metadata")
    label, info, value = spec.setting.label or spec.setting.help, spec.describe(), page_value(name)
    if control.kind == "slider":
        return gr.Slider(control.minimum, control.maximum, value=value, step=control.step, label=label, info=info)
    if control.kind == "number":
        return gr.Number(value=value, precision=0 if spec.type is int else None, label=label, info=info)
    if control.kind == "radio":
        choices = [
            (f"{help_[:1].upper()}{help_[1:]}" + (" (default)" if choice == spec.default else ""), choice)
            for choice, help_ in zip(spec.setting.choices, spec.setting.choice_help, strict=True)
        ]
        if spec.optional:  # automatic: the setting's `auto` says what that means
            choices.insert(0, (f"Auto: {spec.setting.auto} (default)", "auto"))
        return gr.Radio(choices, value=value, label=label)
    if control.kind == "dropdown":
        options = ["auto", *control.words, *(f"{option:g}" for option in control.options)]
        return gr.Dropdown(options, value=value, allow_custom_value=True, label=label, info=info)
    raise ValueError(f"FinetuneConfig.{name}: unknown control kind {control.kind!r}")


def settings_handler(body: Callable[..., Any], leading: Sequence[tuple[str, Any]]) -> Callable[..., Any]:
    """`body(settings, **leading, request=, progress=)` as a Gradio event handler whose parameters are `leading`
    (name, default), then the page's settings (SETTING_NAMES, with `api_default`s), then the request and the
    progress tracker. gradio_client names an endpoint's parameters after its handler's signature: built here from
    the settings, the API's names are theirs without listing them a second time by hand."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(name, keyword, default=default) for name, default in leading]
    parameters += [inspect.Parameter(name, keyword, default=api_default(name)) for name in SETTING_NAMES]
    parameters += [
        inspect.Parameter("request", keyword, default=None, annotation=Optional[gr.Request]),
        inspect.Parameter("progress", keyword, default=gr.Progress()),
    ]
    signature = inspect.Signature(parameters)

    def handler(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        values = {name: arguments.pop(name) for name in SETTING_NAMES}
        yield from body(values, **arguments)

    handler.__signature__ = signature  # type: ignore[attr-defined]  # inspect.signature (Gradio) reads it
    handler.__annotations__ = {"request": Optional[gr.Request]}  # Gradio finds the request by its annotation
    handler.__name__ = handler.__qualname__ = body.__name__
    return handler
