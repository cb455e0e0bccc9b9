"""The Search tab: build or open an index (examples, allowed server folders, or the session's uploads), then
search it by text, by an uploaded image, or by clicking a result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr

from clipapp.app import actions
from clipapp.app.picks import picked_paths, picks_text, toggle_pick
from clipapp.app.sessions import EXAMPLES
from clipapp.app.ui import duplicates_view, map_view
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
from clipapp.index.filters import SORTS, SearchFilter, SearchOptions
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


def _options(k, threshold, tag, after, before, under, sort) -> SearchOptions:
    """The search options of the tab's inputs (k, min score slider, the filter boxes, sort), checked."""
    chosen = SearchFilter.parse(after=after, before=before, under=under, tag=tag)
    return SearchOptions(k=int(k), min_score=_threshold(threshold), filter=chosen, sort=sort)


def tag_choices(counts: dict[str, int]) -> list[tuple[str, str]]:
    """The "Only tagged" dropdown: every tag of the index with its count, after the no-filter choice."""
    return [("(any image)", ANY_TAG), *((f"{tag} ({count})", tag) for tag, count in counts.items())]


def selection_markdown(classes: dict[str, list[str]]) -> str:
    if not classes:
        return "No classes yet: select results, type a class name, press **Add to class**."
    rows = "\n".join(f"| {name} | {len(paths)} |" for name, paths in classes.items())
    return f"| class | images |\n|---|---|\n{rows}"


@dataclass
class SearchHandles:
    """What the Fine-tune tab wires to: "Fine-tune on these" and the inputs it reads."""

    finetune_button: gr.Button
    source: gr.Dropdown
    selection: gr.Textbox


@dataclass
class _IndexControls:
    source: gr.Dropdown
    uploads: gr.File
    build_button: gr.Button
    status: gr.JSON


@dataclass
class _SearchControls:
    query: gr.Textbox
    search_button: gr.Button
    templates: gr.Dropdown
    k: gr.Slider
    threshold: gr.Slider
    tag: gr.Dropdown
    after: gr.Textbox
    before: gr.Textbox
    under: gr.Textbox
    sort: gr.Radio
    query_image: gr.File
    image_button: gr.Button
    gallery: gr.Gallery
    results: gr.JSON


@dataclass
class _PickControls:
    select_mode: gr.Checkbox
    selected: gr.Textbox
    class_name: gr.Textbox
    add_button: gr.Button
    tag_name: gr.Textbox
    tag_button: gr.Button
    tagged: gr.Markdown
    tag_result: gr.JSON  # hidden: the tagging's JSON, what the /tag_images endpoint returns first
    collected: gr.Markdown
    selection: gr.Textbox  # the collected classes (NAME=PATH,PATH lines): the page's own copy of the picks
    finetune_button: gr.Button
    clear_button: gr.Button


def build_tab(ctx: AppContext) -> SearchHandles:
    with gr.Row():
        with gr.Column(scale=1):
            index = _index_controls(ctx)
        with gr.Column(scale=2):
            search = _search_controls()
            with gr.Accordion("Collect classes from these results, then fine-tune", open=True):
                picks = _pick_controls()
            duplicates_view.build_view(ctx, index.source)
            with gr.Accordion("Map of the collection: draw around images (or drag a box) to select them", open=False):
                map_view.build(ctx, index.source)
    _wire_index(ctx, index, search.tag)
    _wire_search(ctx, index.source, search, picks)
    _wire_picks(ctx, index.source, picks)
    _wire_tagging(ctx, index.source, picks, search.tag)
    return SearchHandles(finetune_button=picks.finetune_button, source=index.source, selection=picks.selection)


# -- layout ---------------------------------------------------------------------------------------------------------
def _index_controls(ctx: AppContext) -> _IndexControls:
    source = gr.Dropdown(
        ctx.sessions.sources(),
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
    return _IndexControls(source, uploads, gr.Button("Build / update index"), gr.JSON(label="Index report"))


def _search_controls() -> _SearchControls:
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
        # value="": a default, so API callers that predate the filters may leave them out
        after = gr.Textbox(
            value="", label="Taken on or after", placeholder="YYYY-MM-DD", info="EXIF date, else file date"
        )
        before = gr.Textbox(value="", label="Taken on or before", placeholder="YYYY-MM-DD")
        under = gr.Textbox(
            value="", label="Under folder", placeholder="/photos/2023", info="a path or an alias under it"
        )
        sort = gr.Radio(list(SORTS), value=SORTS[0], label="Sort", info="date: the top k, newest first")
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
    return _SearchControls(
        query,
        search_button,
        templates,
        k,
        threshold,
        tag,
        after,
        before,
        under,
        sort,
        query_image,
        image_button,
        gallery,
        results,
    )


def _pick_controls() -> _PickControls:
    select_mode = gr.Checkbox(False, label="Select mode: clicking a result selects it (or unselects it)")
    with gr.Row():
        selected = gr.Textbox(
            label="Selected images (one path per line)", lines=3, scale=3, elem_id=map_view.SELECTED_ID
        )
        with gr.Column(scale=1):
            class_name = gr.Textbox(label="Class name", placeholder="sneaker")
            add_button = gr.Button("Add to class")
        with gr.Column(scale=1):
            tag_name = gr.Textbox(label="Tag name", placeholder="holidays")
            tag_button = gr.Button("Tag these")
    tagged = gr.Markdown("", elem_id="tagged-images")
    tag_result = gr.JSON(visible=False)
    collected = gr.Markdown(selection_markdown({}), elem_id="collected-classes")
    selection = gr.Textbox(label="Collected classes", visible=False)
    with gr.Row():
        finetune_button = gr.Button("Fine-tune on these", variant="primary")
        clear_button = gr.Button("Clear classes")
    return _PickControls(
        select_mode,
        selected,
        class_name,
        add_button,
        tag_name,
        tag_button,
        tagged,
        tag_result,
        collected,
        selection,
        finetune_button,
        clear_button,
    )


# -- events: each handler calls one action ------------------------------------------------------------------------
FIGURES: ListenerOptions = {"concurrency_id": "figures", "concurrency_limit": 2, "api_visibility": "private"}


def _tags_handler(ctx: AppContext):
    def tags_of(source_, request: gr.Request):
        return gr.Dropdown(choices=tag_choices(actions.source_tags(ctx.sessions, source_, session_of(request))))

    return user_errors(tags_of)


def _wire_index(ctx: AppContext, c: _IndexControls, tag: gr.Dropdown) -> None:
    def index_images(source_=EXAMPLES, files_=None, request: Optional[gr.Request] = None, progress=gr.Progress()):
        files = uploaded_paths(files_)

        def report(done: int, total: int, message: str) -> None:
            progress(done / max(total, 1), desc=message)

        names = [display_name(p) for p in files]
        return actions.update_source(
            ctx.sessions, source_, session_of(request), files, names=names, progress=report
        ).to_dict()

    # Indexing is a heavy job: its own group, one at a time, so it never takes the model group's slots.
    c.build_button.click(
        user_errors(index_images),
        [c.source, c.uploads],
        c.status,
        api_name="index_images",
        concurrency_id="index",
        concurrency_limit=1,
    ).success(_tags_handler(ctx), c.source, tag, api_visibility="private")


def _wire_search(ctx: AppContext, source: gr.Dropdown, c: _SearchControls, picks: _PickControls) -> None:
    def by_text(
        source_,
        query_,
        templates_=DEFAULT_TEMPLATES,
        k_=DEFAULT_K,
        threshold_=-1,
        tag_=ANY_TAG,
        after_="",
        before_="",
        under_="",
        sort_=SORTS[0],
        request: Optional[gr.Request] = None,
    ):
        return actions.search_source_text(
            ctx.sessions,
            source_,
            session_of(request),
            query_,
            _options(k_, threshold_, tag_, after_, before_, under_, sort_),
            templates=templates_,
        ).for_gradio()

    def by_image(
        source_,
        image_,
        k_=DEFAULT_K,
        threshold_=-1,
        tag_=ANY_TAG,
        after_="",
        before_="",
        under_="",
        sort_=SORTS[0],
        request: Optional[gr.Request] = None,
    ):
        paths = uploaded_paths(image_)
        if not paths:
            raise ClipAppError("Upload an image to search by.")
        return actions.search_source_image(
            ctx.sessions,
            source_,
            session_of(request),
            paths[0],
            _options(k_, threshold_, tag_, after_, before_, under_, sort_),
        ).for_gradio()

    def by_click(
        source_,
        current,
        k_,
        threshold_,
        select_mode_,
        selected_,
        tag_,
        after_,
        before_,
        under_,
        sort_,
        evt: gr.SelectData,
        request: gr.Request,
    ):
        hits = (current or {}).get("results", [])
        if evt.index is None or evt.index >= len(hits):
            raise ClipAppError("Click a search result to search by it.")
        path = hits[evt.index][GRADIO_FILE_KEY]
        if select_mode_:
            return gr.skip(), toggle_pick(selected_, path)
        found = actions.search_like_indexed(
            ctx.sessions,
            source_,
            session_of(request),
            path,
            _options(k_, threshold_, tag_, after_, before_, under_, sort_),
        )
        return found.for_gradio(), gr.skip()

    model: ListenerOptions = {"concurrency_id": "model", "concurrency_limit": ctx.model_concurrency}
    model_private: ListenerOptions = {**model, "api_visibility": "private"}  # page-only events in the model group
    filters = [c.tag, c.after, c.before, c.under, c.sort]  # appended last: older API callers' arguments keep places
    text_inputs = [source, c.query, c.templates, c.k, c.threshold, *filters]
    c.search_button.click(user_errors(by_text), text_inputs, c.results, api_name="search_text", **model).success(
        gallery_of, c.results, c.gallery, **FIGURES
    )
    c.query.submit(user_errors(by_text), text_inputs, c.results, **model_private).success(
        gallery_of, c.results, c.gallery, **FIGURES
    )
    c.image_button.click(
        user_errors(by_image),
        [source, c.query_image, c.k, c.threshold, *filters],
        c.results,
        api_name="search_image",
        **model,
    ).success(gallery_of, c.results, c.gallery, **FIGURES)
    # In select mode the results stay as they are (gr.skip), so the chained redraw is skipped too.
    c.gallery.select(
        user_errors(by_click),
        [source, c.results, c.k, c.threshold, picks.select_mode, picks.selected, *filters],
        [c.results, picks.selected],
        **model_private,
    ).success(gallery_of, c.results, c.gallery, **FIGURES)
    # The tag list follows the index: on choosing it, after building it, and on opening the dropdown.
    source.change(_tags_handler(ctx), source, c.tag, **FIGURES)
    c.tag.focus(_tags_handler(ctx), source, c.tag, **FIGURES)


def _wire_picks(ctx: AppContext, source: gr.Dropdown, c: _PickControls) -> None:
    def add_to_class(
        class_name_, selected_=None, selection_=None, source_=EXAMPLES, request: Optional[gr.Request] = None
    ):
        """-> (the collected classes as NAME=PATH,PATH lines, their table, the emptied selection)."""
        classes = actions.pick_into_class(
            ctx.sessions, source_, session_of(request), selection_, class_name_, picked_paths(selected_)
        )
        return picks_text(classes), selection_markdown(classes), ""

    c.add_button.click(
        user_errors(add_to_class),
        [c.class_name, c.selected, c.selection, source],
        [c.selection, c.collected, c.selected],
        api_name="add_to_class",
        concurrency_id="figures",
        concurrency_limit=2,
    )
    c.clear_button.click(
        lambda: ("", selection_markdown({})), None, [c.selection, c.collected], queue=False, api_visibility="private"
    )


def _wire_tagging(ctx: AppContext, source: gr.Dropdown, c: _PickControls, tag: gr.Dropdown) -> None:
    """The "Tag these" button: the selected images get a tag in the index, which "Only tagged" then offers."""

    def tag_these(tag_name_, selected_=None, source_=EXAMPLES, request: Optional[gr.Request] = None):
        """-> (the tagging's JSON, a line saying what was tagged, the "Only tagged" choices)."""
        session = session_of(request)
        report = actions.tag_source_images(ctx.sessions, source_, session, selected_, tag_name_)
        choices = tag_choices(actions.source_tags(ctx.sessions, source_, session))
        line = f"Tagged {report.tagged} images **{report.tag}** ({report.total} in this index have it)."
        return report.to_dict(), line, gr.Dropdown(choices=choices)

    c.tag_button.click(
        user_errors(tag_these),
        [c.tag_name, c.selected, source],
        [c.tag_result, c.tagged, tag],
        api_name="tag_images",
        concurrency_id="figures",
        concurrency_limit=2,
    )
