"""The Search tab: build or open an index (examples, allowed server folders, or the session's uploads), then
search it by text, by an uploaded image, or by clicking a result."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from clipapp import tasks
from clipapp.errors import ClipAppError
from clipapp.prompts import DEFAULT_TEMPLATES
from clipapp.sessions import EXAMPLES, MY_UPLOADS, describe_duration
from clipapp.ui.common import AppContext, Files, display_name, session_of, uploaded_paths, user_errors
from clipapp.ui.zero_shot_tab import TEMPLATE_CHOICES

DEFAULT_K = 12


def _page_result(result: dict) -> dict:
    """The JSON for the page and the API. It names each hit's file "image", not "path": gradio_client takes any
    {"path": ...} dict for a file to download and would drop the score."""
    return {"results": [{"image": hit["path"], "score": hit["score"]} for hit in result["results"]]}


def gallery_of(result: Optional[dict]) -> list[tuple[str, str]]:
    """The page's gallery for a result: drawn by a chained event, so API callers get the JSON without 12 image
    files copied into Gradio's cache and downloaded by their client on every search."""
    return [(hit["image"], f"{hit['score']:.3f}  {display_name(hit['image'])}") for hit in (result or {}).get("results", [])]


def _threshold(value) -> Optional[float]:
    return None if value is None or float(value) <= -1 else float(value)


def build_tab(ctx: AppContext) -> None:
    registry = ctx.sessions
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Dropdown(registry.sources(), value=EXAMPLES, label="Index",
                                 info="the built-in examples, a server folder allowed with --allowed-root, or your uploads")
            uploads = Files(label="Add images to 'my uploads'", file_types=["image"], type="filepath")
            gr.Markdown(f"Uploads to 'my uploads' are private to this browser session and kept on the server for "
                        f"{describe_duration(ctx.session_ttl_s)} after its last use, then deleted.",
                        elem_id="uploads-kept")
            build_button = gr.Button("Build / update index")
            status = gr.JSON(label="Index report")
        with gr.Column(scale=2):
            with gr.Row():
                query = gr.Textbox(label="Text query", placeholder="a cat   or   dog + snow - grass", scale=3)
                search_button = gr.Button("Search", variant="primary", scale=1)
            with gr.Row():
                templates = gr.Dropdown(TEMPLATE_CHOICES, value=DEFAULT_TEMPLATES, label="Prompt templates")
                k = gr.Slider(1, 100, value=DEFAULT_K, step=1, label="Results (k)")
                threshold = gr.Slider(-1, 1, value=-1, step=0.01, label="Min score (-1 = none)")
            with gr.Row():
                query_image = gr.File(label="Search by image", file_types=["image"], type="filepath", scale=3)
                image_button = gr.Button("Search by image", scale=1)
            gallery = gr.Gallery(label="Results (click one to search by it)", columns=6, height=520,
                                 allow_preview=False)
            results = gr.JSON(label="Results", visible=False)

    def index_images(source_=EXAMPLES, files_=None, request: gr.Request = None, progress=gr.Progress()):
        session = session_of(request)
        files = uploaded_paths(files_)
        problems = []
        if files:
            if source_ != MY_UPLOADS:
                raise ClipAppError("Uploaded images go to the 'my uploads' index: choose it first.")
            problems = registry.store_uploads(session, files, names=[display_name(p) for p in files])

        def report(done: int, total: int, message: str) -> None:
            progress(done / max(total, 1), desc=message)

        result = registry.update(source_, session, progress=report)
        if problems:
            result["refused_uploads"] = problems
        return result

    def by_text(source_, query_, templates_=DEFAULT_TEMPLATES, k_=DEFAULT_K, threshold_=-1,
                request: gr.Request = None):
        with registry.searchable(source_, session_of(request)) as index:
            # Image terms in a typed query would make the server read its own files: text only here.
            result = tasks.search_text(ctx.service, index, query_, k=int(k_), threshold=_threshold(threshold_),
                                       templates=templates_, allow_image_paths=False)
        return _page_result(result)

    def by_image(source_, image_, k_=DEFAULT_K, threshold_=-1, request: gr.Request = None):
        paths = uploaded_paths(image_)
        if not paths:
            raise ClipAppError("Upload an image to search by.")
        with registry.searchable(source_, session_of(request)) as index:
            result = tasks.search_image(ctx.service, index, paths[0], k=int(k_), threshold=_threshold(threshold_))
        return _page_result(result)

    def by_click(source_, current, k_, threshold_, evt: gr.SelectData, request: gr.Request):
        hits = (current or {}).get("results", [])
        if evt.index is None or evt.index >= len(hits):
            raise ClipAppError("Click a search result to search by it.")
        with registry.searchable(source_, session_of(request)) as index:
            vector = index.vector_for_path(hits[evt.index]["image"])
            if vector is None:
                raise ClipAppError("That image is no longer in the index; search again.")
            result = tasks.search_vector(index, vector, k=int(k_), threshold=_threshold(threshold_))
        return _page_result(result)

    # Indexing is a heavy job: its own group, one at a time, so it never takes the model group's slots.
    build_button.click(user_errors(index_images), [source, uploads], status, api_name="index_images",
                       concurrency_id="index", concurrency_limit=1)
    model = {"concurrency_id": "model", "concurrency_limit": ctx.model_concurrency}
    text_inputs = [source, query, templates, k, threshold]
    show = {"fn": gallery_of, "inputs": results, "outputs": gallery, "concurrency_id": "figures",
            "concurrency_limit": 2, "api_visibility": "private"}
    search_button.click(user_errors(by_text), text_inputs, results, api_name="search_text", **model).success(**show)
    query.submit(user_errors(by_text), text_inputs, results, api_visibility="private", **model).success(**show)
    image_button.click(user_errors(by_image), [source, query_image, k, threshold], results,
                       api_name="search_image", **model).success(**show)
    gallery.select(user_errors(by_click), [source, results, k, threshold], results,
                   api_visibility="private", **model).success(**show)
