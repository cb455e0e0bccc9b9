"""The Gradio app: layout of the three tabs in one place; every action calls the core via clipapp.tasks."""

from __future__ import annotations

import gradio as gr

from clipapp.ui import finetune_tab, search_tab, zero_shot_tab
from clipapp.ui.common import AppContext

TITLE = "clipapp — CLIP zero-shot, search and few-shot fine-tuning"


def model_banner(ctx: AppContext) -> str:
    text = f"**Model:** `{ctx.service.spec}` — {ctx.service.description}"
    if ctx.service.notice:
        text += f"\n\n⚠️ {ctx.service.notice}"
    return text


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(model_banner(ctx), elem_id="model-banner")
        # This browser session's fine-tuned adapter: set by the Fine-tune tab, used (and cleared) by Zero-shot.
        adapter_state = gr.State(None)
        with gr.Tab("Zero-shot", id="zero-shot"):
            zero_shot_tab.build_tab(ctx, adapter_state)
        with gr.Tab("Search", id="search"):
            search_tab.build_tab(ctx)
        with gr.Tab("Fine-tune", id="fine-tune"):
            finetune_tab.build_tab(ctx, adapter_state)
    # One model, two CPU cores: events that use the model queue behind each other.
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def launch_options(ctx: AppContext) -> dict:
    """Arguments for `demo.launch` that follow from the context: the folders whose images the page may show."""
    return {"allowed_paths": [str(ctx.examples_dir), *(str(root) for root in ctx.allowed_roots),
                              str(ctx.state_dir / "sessions")]}
