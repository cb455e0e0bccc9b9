"""Under the model banner: the models one can pick, as a table in a closed accordion (the same rows as
`clipapp models`), and the Gradio API endpoint `/list_models` answering `clipapp models --json`."""

from __future__ import annotations

import gradio as gr

from clipapp.app import actions
from clipapp.app.ui.common import AppContext


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def table_markdown(table: actions.ModelTable) -> str:
    """A Markdown table of the catalog: the default in bold, this server's model marked."""
    lines = [
        "| model | ImageNet 0-shot | license | images/s fp32 (int8) | fine-tune s: head / default (60 s budget) |",
        "|---|---|---|---|---|",
    ]
    for row in table.rows:
        name = f"**`{row.model.spec}`** (default)" if row.default else f"`{row.model.spec}`"
        if row.selected:
            name += " ← this server"
        if not row.loadable:
            name += f" ({row.why_not})"
        speed = f"{_cell(row.figure('fp32', 'images_per_s'))} ({_cell(row.figure('int8', 'images_per_s'))})"
        lines.append(
            f"| {name} | {_cell(row.model.imagenet_top1, '{:.1f}%')} | {row.model.license} | {speed} | "
            f"{_cell(row.value('finetune_head_s'), '{:.0f}')} / {_cell(row.value('finetune_default_s'), '{:.0f}')} |"
        )
    if table.measured_on:
        lines.append(f"\nMeasured {table.measured_at} on {table.measured_on}. Start the app with `--model SPEC`.")
    return "\n".join(lines)


def build(ctx: AppContext) -> None:
    """The accordion, and `/list_models` for programs (GET /v1/models is the same JSON)."""
    requested = ctx.service.loaded.requested_spec
    with gr.Accordion("Models you can pick", open=False):
        gr.Markdown(table_markdown(actions.list_models(requested)), elem_id="model-table")

    def list_models() -> dict:
        """The models one can pick with their published accuracy, license and measured cost."""
        return actions.list_models(requested).to_dict()

    gr.api(list_models, api_name="list_models", queue=False)
