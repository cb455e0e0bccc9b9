"""The Gradio app: layout of the three tabs in one place; every action calls the core via clipapp.app.actions.

`build_server` mounts the page on the FastAPI app of `clipapp.app.http_api` (the /v1 JSON routes and /health), so one
process and one port serve the page, the Gradio API and the plain HTTP API.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from clipapp.app.ui import finetune_tab, models_view, search_tab, zero_shot_tab
from clipapp.app.ui.common import AppContext

TITLE = "clipapp — CLIP zero-shot, search and few-shot fine-tuning"
# Small images (28 x 28 Fashion-MNIST) are shown enlarged: keep their pixels square instead of a blur.
CSS = ".pixelated img, .pixelated-thumbs img { image-rendering: pixelated; }"  # 28 x 28 clothes, enlarged
QUEUE_MAX_SIZE = 256  # events waiting beyond this are refused at once ("queue full") rather than left to time out


def model_banner(ctx: AppContext) -> str:
    text = f"**Model:** `{ctx.service.spec}` — {ctx.service.description}"
    if ctx.service.notice:
        text += f"\n\n⚠️ {ctx.service.notice}"
    return text


def build_app(ctx: AppContext) -> gr.Blocks:
    # Gradio's copies of uploads are deleted on the same schedule as the sessions' own files.
    ttl = int(ctx.session_ttl_s)
    with gr.Blocks(title=TITLE, delete_cache=(max(60, min(ttl, 3600)), ttl)) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(model_banner(ctx), elem_id="model-banner")
        models_view.build(ctx)
        # The name of this browser session's fine-tuned adapter: set by the Fine-tune tab, used (and cleared) by
        # Zero-shot. The adapter itself lives in ctx.sessions, which unloads it when idle.
        adapter_state = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Zero-shot", id="zero-shot"):
                zero_shot_tab.build_tab(ctx, adapter_state)
            with gr.Tab("Search", id="search"):
                search = search_tab.build_tab(ctx)
            with gr.Tab("Fine-tune", id="fine-tune"):
                finetune = finetune_tab.build_tab(ctx, adapter_state)
        # Search results collected into classes go to the Fine-tune tab's flow ("Fine-tune on these").
        finetune_tab.wire_selection(ctx, search.finetune_button, search.source, search.selection, finetune, tabs)
    # Each event names its concurrency group: "model" (interactive, many at once so the micro-batcher can merge
    # them), "figures", and one-at-a-time groups for the heavy jobs ("index", "finetune"), which therefore never
    # hold the slots interactive requests need.
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_MAX_SIZE)
    return demo


def launch_options(ctx: AppContext) -> dict:
    """Arguments for `demo.launch` (or `gr.mount_gradio_app`) that follow from the context: the folders whose
    images the page may show, and the page's CSS."""
    return {
        "allowed_paths": [
            str(ctx.examples_dir),
            str(ctx.finetune_example_dir),
            *(str(root) for root in ctx.allowed_roots),
            str(ctx.state_dir / "sessions"),
        ],
        "css": CSS,
    }


def queue_length(demo: gr.Blocks) -> int:
    queue = getattr(demo, "_queue", None)
    return len(queue) if queue is not None else 0


def build_server(ctx: AppContext, *, auth: Optional[tuple[str, str]] = None, max_upload: Optional[str] = None):
    """The FastAPI app serving /health, /v1/... (clipapp.app.http_api) and the Gradio page at /."""
    from clipapp.app.http_api import create_app

    demo = build_app(ctx)
    app = create_app(ctx.sessions, auth=auth, max_upload=max_upload, queue_length=lambda: queue_length(demo))
    return gr.mount_gradio_app(
        app, demo, path="", auth=auth, max_file_size=max_upload, show_error=False, **launch_options(ctx)
    )
