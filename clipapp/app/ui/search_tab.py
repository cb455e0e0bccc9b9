"""The Search tab: build or open an index (examples, allowed server folders, or the session's uploads), then
search it by text, by an uploaded image, or by clicking a result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr

from clipapp.app import actions
from clipapp.app.sessions import EXAMPLES, MY_UPLOADS
from clipapp.app.ui.common import (
    IMAGE_FILE_TYPES,
    AppContext,
    Files,
    ListenerOptions,
    display_name,
    session_of,
    uploaded_paths,
    user_errors,
)
from clipapp.app.ui.zero_shot_tab import TEMPLATE_CHOICES
from clipapp.errors import ClipAppError
from clipapp.finetune.intake import add_to_selection, parse_selection, selection_text
from clipapp.index.results import GRADIO_FILE_KEY
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.units import describe_duration

DEFAULT_K = 12


def gallery_of(result: Optional[dict]) -> list[tuple[str, str]]:
    """The page's gallery for a result's JSON (`SearchResult.for_gradio`, which names each hit's file "image"):
    drawn by a chained event, so API callers get the JSON without 12 image files copied into Gradio's cache and
    downloaded by their client on every search."""
    return [
        (hit[GRADIO_FILE_KEY], f"{hit['score']:.3f}  {display_name(hit[GRADIO_FILE_KEY])}")
        for hit in (result or {}).get("results", [])
    ]


def _threshold(value) -> Optional[float]:
    return None if value is None or float(value) <= -1 else float(value)


ANY_TAG = ""  # the tag filter's "no filter" value


def tag_choices(counts: dict[str, int]) -> list[tuple[str, str]]:
    """The "Only tagged" dropdown: every tag of the index with its count, after the no-filter choice."""
    return [("(any image)", ANY_TAG), *((f"{tag} ({count})", tag) for tag, count in counts.items())]


def selection_markdown(classes: dict[str, list[str]]) -> str:
    if not classes:
        return "No classes yet: select results, type a class name, press **Add to class**."
    rows = "\n".join(f"| {name} | {len(paths)} |" for name, paths in classes.items())
    return f"| class | images |\n|---|---|\n{rows}"


def _toggled(selected: str, path: str) -> str:
    lines = [line for line in (selected or "").splitlines() if line.strip()]
    return "\n".join([p for p in lines if p != path] if path in lines else [*lines, path])


@dataclass
class SearchHandles:
    """What the Fine-tune tab wires to: "Fine-tune on these" and the inputs it reads."""

    finetune_button: gr.Button
    source: gr.Dropdown
    selection: gr.Textbox


def build_tab(ctx: AppContext) -> SearchHandles:
    registry = ctx.sessions
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Dropdown(
                registry.sources(),
                value=EXAMPLES,
                label="Index",
                info="the built-in examples, a server folder allowed with --allowed-root, or your uploads",
            )
            uploads = Files(label="Add images to 'my uploads'", file_types=IMAGE_FILE_TYPES, type="filepath")
            gr.Markdown(
                f"Uploads to 'my uploads' are private to this browser session and kept on the server for "
                f"{describe_duration(ctx.session_ttl_s)} after its last use, then deleted.",
                elem_id="uploads-kept",
            )
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
                tag = gr.Dropdown(
                    tag_choices({}),
                    value=ANY_TAG,
                    allow_custom_value=True,
                    label="Only tagged",
                    info="images tagged by `classify --index --tag` (with counts)",
                )
            with gr.Row():
                query_image = gr.File(label="Search by image", file_types=IMAGE_FILE_TYPES, type="filepath", scale=3)
                image_button = gr.Button("Search by image", scale=1)
            gallery = gr.Gallery(
                label="Results (click one to search by it, or to select it in select mode)",
                columns=6,
                height=520,
                allow_preview=False,
            )
            results = gr.JSON(label="Results", visible=False)
            with gr.Accordion("Collect classes from these results, then fine-tune", open=True):
                select_mode = gr.Checkbox(False, label="Select mode: clicking a result selects it (or unselects it)")
                with gr.Row():
                    selected = gr.Textbox(label="Selected images (one path per line)", lines=3, scale=3)
                    with gr.Column(scale=1):
                        class_name = gr.Textbox(label="Class name", placeholder="sneaker")
                        add_button = gr.Button("Add to class")
                collected = gr.Markdown(selection_markdown({}), elem_id="collected-classes")
                # The collected classes (NAME=PATH,PATH lines): the page's own copy of the session's selection.
                selection = gr.Textbox(label="Collected classes", visible=False)
                with gr.Row():
                    finetune_button = gr.Button("Fine-tune on these", variant="primary")
                    clear_button = gr.Button("Clear classes")

    def index_images(source_=EXAMPLES, files_=None, request: Optional[gr.Request] = None, progress=gr.Progress()):
        session = session_of(request)
        files = uploaded_paths(files_)
        problems = []
        if files:
            if source_ != MY_UPLOADS:
                raise ClipAppError("Uploaded images go to the 'my uploads' index: choose it first.")
            problems = registry.store_uploads(session, files, names=[display_name(p) for p in files])

        def report(done: int, total: int, message: str) -> None:
            progress(done / max(total, 1), desc=message)

        result = registry.update(source_, session, progress=report).to_dict()
        if problems:
            result["refused_uploads"] = problems
        return result

    def by_text(
        source_,
        query_,
        templates_=DEFAULT_TEMPLATES,
        k_=DEFAULT_K,
        threshold_=-1,
        tag_=ANY_TAG,
        request: Optional[gr.Request] = None,
    ):
        with registry.searchable(source_, session_of(request)) as index:
            # Image terms in a typed query would make the server read its own files: text only here.
            result = actions.search_text(
                ctx.service,
                index,
                query_,
                k=int(k_),
                threshold=_threshold(threshold_),
                templates=templates_,
                allow_image_paths=False,
                tag=tag_ or None,
            )
        return result.for_gradio()

    def by_image(source_, image_, k_=DEFAULT_K, threshold_=-1, tag_=ANY_TAG, request: Optional[gr.Request] = None):
        paths = uploaded_paths(image_)
        if not paths:
            raise ClipAppError("Upload an image to search by.")
        with registry.searchable(source_, session_of(request)) as index:
            result = actions.search_image(
                ctx.service, index, paths[0], k=int(k_), threshold=_threshold(threshold_), tag=tag_ or None
            )
        return result.for_gradio()

    def tags_of(source_, request: gr.Request):
        with registry.searchable(source_, session_of(request)) as index:
            return gr.Dropdown(choices=tag_choices(index.tag_counts()))

    def add_to_class(
        class_name_, selected_=None, selection_=None, source_=EXAMPLES, request: Optional[gr.Request] = None
    ):
        """-> (the collected classes as NAME=PATH,PATH lines, their table, the emptied selection)."""
        paths = [line.strip() for line in (selected_ or "").splitlines() if line.strip()]
        with registry.searchable(source_, session_of(request)) as index:
            classes = add_to_selection(parse_selection(selection_), class_name_, paths, index)
        return selection_text(classes), selection_markdown(classes), ""

    def by_click(source_, current, k_, threshold_, select_mode_, selected_, evt: gr.SelectData, request: gr.Request):
        hits = (current or {}).get("results", [])
        if evt.index is None or evt.index >= len(hits):
            raise ClipAppError("Click a search result to search by it.")
        if select_mode_:
            return gr.skip(), _toggled(selected_, hits[evt.index][GRADIO_FILE_KEY])
        with registry.searchable(source_, session_of(request)) as index:
            vector = index.vector_for_path(hits[evt.index][GRADIO_FILE_KEY])
            if vector is None:
                raise ClipAppError("That image is no longer in the index; search again.")
            result = actions.search_vector(index, vector, k=int(k_), threshold=_threshold(threshold_))
        return result.for_gradio(), gr.skip()

    # Indexing is a heavy job: its own group, one at a time, so it never takes the model group's slots.
    build_button.click(
        user_errors(index_images),
        [source, uploads],
        status,
        api_name="index_images",
        concurrency_id="index",
        concurrency_limit=1,
    ).success(user_errors(tags_of), source, tag, api_visibility="private")
    model: ListenerOptions = {"concurrency_id": "model", "concurrency_limit": ctx.model_concurrency}
    figures: ListenerOptions = {"concurrency_id": "figures", "concurrency_limit": 2, "api_visibility": "private"}
    model_private: ListenerOptions = {**model, "api_visibility": "private"}  # page-only events in the model group
    text_inputs = [source, query, templates, k, threshold, tag]
    search_button.click(user_errors(by_text), text_inputs, results, api_name="search_text", **model).success(
        gallery_of, results, gallery, **figures
    )
    query.submit(user_errors(by_text), text_inputs, results, **model_private).success(
        gallery_of, results, gallery, **figures
    )
    image_button.click(
        user_errors(by_image), [source, query_image, k, threshold, tag], results, api_name="search_image", **model
    ).success(gallery_of, results, gallery, **figures)
    # In select mode the results stay as they are (gr.skip), so the chained redraw is skipped too.
    gallery.select(
        user_errors(by_click),
        [source, results, k, threshold, select_mode, selected],
        [results, selected],
        **model_private,
    ).success(gallery_of, results, gallery, **figures)
    # The tag list follows the index: on choosing it, after building it, and on opening the dropdown.
    source.change(user_errors(tags_of), source, tag, **figures)
    tag.focus(user_errors(tags_of), source, tag, **figures)
    add_button.click(
        user_errors(add_to_class),
        [class_name, selected, selection, source],
        [selection, collected, selected],
        api_name="add_to_class",
        concurrency_id="figures",
        concurrency_limit=2,
    )
    clear_button.click(
        lambda: ("", selection_markdown({})), None, [selection, collected], queue=False, api_visibility="private"
    )
    return SearchHandles(finetune_button=finetune_button, source=source, selection=selection)
