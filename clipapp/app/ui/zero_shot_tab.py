"""The Zero-shot tab: images + labels -> top-k bars per image, a similarity heatmap, and where each label matches
(region maps: clipapp/app/ui/regions_view.py).

Classify and Similarity answer with JSON only (what API callers get); the page then draws the heatmap in a chained
event of its own, outside the model's concurrency group, from the cosines the classification already computed.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
from pathlib import Path
from typing import Optional

import gradio as gr
from PIL import Image

from clipapp.app import actions
from clipapp.app.ui import regions_view
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
from clipapp.images.decode import load_image
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.model.spec import DEFAULT_SPEC
from clipapp.viz.heatmap_image import png_bytes, similarity_heatmap_image

TEMPLATE_CHOICES = [
    ("simple (7 templates)", "simple"),
    ("openai (80 templates)", "openai"),
    ("none (label as written)", "none"),
]
DEFAULT_TOP_K = 5
RESULT_IMAGE_PX = 140  # height of the image beside each image's bars
# Images no larger than that slot (28 x 28 Fashion-MNIST, the 112 x 112 examples) are enlarged into it: keep their
# pixels sharp (CSS image-rendering: pixelated) rather than a blur.
SMALL_IMAGE_PX = RESULT_IMAGE_PX
THUMB_SIDE = 160
# Example thumbnails: one row per set across the page (Gradio's gallery cells are >= ~100 px: in the inputs' column
# at 1400 px only 3 fitted a row, seen in a screenshot)
EXAMPLE_ROW_PX = 170
PHOTO_LABELS = "astronaut, cat, cup of coffee, rocket, motorcycle, horse, camera, page of text"
FASHION_LABELS = "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"


def _load(ctx: AppContext, files) -> list[actions.NamedImage]:
    paths = uploaded_paths(files)
    return actions.load_named_images(paths, names=[display_name(p) for p in paths], limits=ctx.service.limits)


def classify_images(
    ctx: AppContext,
    files,
    labels: str,
    templates: str = DEFAULT_TEMPLATES,
    custom_template: str = "",
    top_k: float = DEFAULT_TOP_K,
    adapter=None,
):
    """-> (results JSON as in the CLI, what the heatmap needs: the cosines this classification computed)."""
    images = _load(ctx, files)
    chosen = (
        custom_template.strip() if custom_template and custom_template.strip() else (templates or DEFAULT_TEMPLATES)
    )
    top_k = int(top_k if top_k is not None else DEFAULT_TOP_K)
    found = actions.classify(ctx.service, images, labels, templates=chosen, top_k=top_k, classifier=adapter)
    # the page always says "none of these"; the API's callers read "unknown" / "unknown_score" per result
    figure = {
        "matrix": found.scores.cosine.tolist(),
        "texts": found.labels,
        "images": uploaded_paths(files),
        "title": "Cosine similarity of images and label classifiers",
    }
    return found.to_dict(), figure


NONE_OF_THESE = "none of these"


def label_bars(item: dict) -> dict[str, float]:
    """One result's bars: its top labels and, when computed, the "none of these" score beside them."""
    bars = {t["label"]: t["prob"] for t in item["top"]}
    if item.get("unknown_score") is not None:
        bars[NONE_OF_THESE] = item["unknown_score"]
    return bars


def warnings_markdown(warnings: Optional[list]) -> str:
    """The label check's warnings (their JSON) as the lines shown under the labels box."""
    return "\n".join(f"- ⚠ {w['message']}" for w in warnings or [])


def check_labels(ctx: AppContext, labels: str, templates: str = DEFAULT_TEMPLATES, custom_template: str = ""):
    """-> {"warnings": [...]}: the label check of the labels box (clipapp/model/label_check.py)."""
    from clipapp.model.label_check import check_labels as check

    chosen = custom_template.strip() if custom_template and custom_template.strip() else templates
    return {"warnings": [w.to_dict() for w in check(ctx.service, labels or "", chosen or DEFAULT_TEMPLATES)]}


def similarity_matrix(ctx: AppContext, files, texts: str):
    """-> (similarity JSON as in the CLI, what the heatmap of images x texts as written needs)."""
    images = _load(ctx, files)
    result = actions.similarity(ctx.service, images, texts)
    return result.to_dict(), {
        "matrix": result.matrix,
        "texts": result.texts,
        "images": uploaded_paths(files),
        "title": None,
    }


class HeatmapFiles:
    """PNG files for the page's heatmap: written here with fast compression, then copied by Gradio into its cache,
    so a fixed ring of names bounds the disk they take."""

    def __init__(self, slots: int = 64):
        self.folder = Path(tempfile.mkdtemp(prefix="clipapp-heatmaps-"))
        self._names = itertools.cycle(range(slots))
        self._lock = threading.Lock()

    def draw(self, figure: Optional[dict]) -> Optional[str]:
        if not figure:
            return None
        thumbs = [load_image(p, min_side=THUMB_SIDE) for p in figure["images"]]
        image = similarity_heatmap_image(figure["matrix"], thumbs, figure["texts"], title=figure["title"])
        with self._lock:
            path = self.folder / f"heatmap-{next(self._names)}.png"
        path.write_bytes(png_bytes(image))
        return str(path)


def adapter_markdown(adapter) -> str:
    if adapter is None:
        return ""
    classes = ", ".join(adapter.class_names[:12]) + (" …" if len(adapter.class_names) > 12 else "")
    return (
        f"**Using the fine-tuned adapter `{adapter.name}`** ({adapter.mode}) for Classify: classes {classes}. "
        "The labels box is ignored while it is active."
    )


def _is_small(path: str) -> bool:
    try:
        with Image.open(path) as image:
            return max(image.size) <= SMALL_IMAGE_PX
    except OSError:
        return False


def _fill(paths: list[str], labels: str):
    return lambda: (paths, labels)


def _examples(ctx: AppContext, files, labels) -> None:
    """Each example set as a grid of thumbnails; clicking one fills the images and the labels with the whole set.
    The demo model knows only clothing: with it loaded, lead with Fashion-MNIST and say what the photos need."""
    photos = [str(p) for p in sorted((ctx.examples_dir / "photos").glob("*.jpg"))]
    fashion = [str(p) for p in sorted((ctx.examples_dir / "fashion").glob("*.png"))]
    photo_set = (photos, PHOTO_LABELS, "Photos (CLIP notebook)", "examples-photos")
    fashion_set = (fashion, FASHION_LABELS, "Clothing (Fashion-MNIST)", "examples-fashion")
    if ctx.is_demo_model:
        sets = [
            (fashion, FASHION_LABELS, "Examples the demo model knows: clothing (Fashion-MNIST)", "examples-fashion"),
            (
                photos,
                PHOTO_LABELS,
                "Photos: these need a general CLIP model (the demo model knows clothing only; "
                f"start the app with --model {DEFAULT_SPEC})",
                "examples-photos",
            ),
        ]
    else:
        sets = [photo_set, fashion_set]
    gr.Markdown("**Examples**: click a picture to load its set and labels, then press **Classify**.")
    for paths, text, title, elem_id in sets:
        if not paths:
            continue
        gallery = gr.Gallery(
            value=[(p, display_name(p)) for p in paths],
            label=title,
            columns=len(paths),
            height=EXAMPLE_ROW_PX,
            allow_preview=False,
            interactive=False,
            buttons=[],
            object_fit="contain",
            elem_id=elem_id,
            elem_classes=["pixelated-thumbs"] if "fashion" in elem_id else None,
        )
        gallery.select(_fill(paths, text), None, [files, labels], queue=False, api_visibility="private")


def _results_view(files: gr.File) -> gr.JSON:
    """The classification's JSON (hidden) and, drawn from it, each image beside its top-k bars."""
    results = gr.JSON(label="Results", visible=False)

    @gr.render(inputs=[results, files])
    def show_labels(result, uploaded):
        if not result or "results" not in result:
            gr.Markdown("Upload images, type labels and press **Classify**.")
            return
        paths = {display_name(p): p for p in uploaded_paths(uploaded)}
        gr.Markdown(f"Model: `{result['model']}`")
        for item in result["results"]:
            with gr.Row(equal_height=True):
                if item["image"] in paths:
                    path = paths[item["image"]]
                    gr.Image(
                        path,
                        show_label=False,
                        height=RESULT_IMAGE_PX,
                        scale=1,
                        interactive=False,
                        buttons=[],
                        elem_classes=["pixelated"] if _is_small(path) else None,
                    )
                bars = label_bars(item)
                gr.Label(
                    bars,
                    label=item["image"] + (" — none of these labels?" if item.get("unknown") else ""),
                    num_top_classes=len(bars),
                    scale=3,
                )

    return results


def build_tab(ctx: AppContext, adapter_state: Optional[gr.State] = None) -> None:
    heatmaps = HeatmapFiles()
    with gr.Row():
        with gr.Column(scale=1):
            files = Files(label="Images", file_types=IMAGE_FILE_TYPES, type="filepath")
            # shown while this session's fine-tuned adapter replaces the labels
            with gr.Group(visible=False) as adapter_box:
                adapter_note = gr.Markdown(elem_id="adapter-note")
                back_button = gr.Button("Back to plain zero-shot", size="sm")
            labels = gr.Textbox(
                label="Labels (comma or newline separated)", lines=3, placeholder="cat, dog, a cup of coffee"
            )
            label_warnings = gr.Markdown(elem_id="label-warnings")
            with gr.Row():
                templates = gr.Dropdown(TEMPLATE_CHOICES, value=DEFAULT_TEMPLATES, label="Prompt templates")
                top_k = gr.Slider(1, 10, value=DEFAULT_TOP_K, step=1, label="Top-k")
            custom_template = gr.Textbox(
                value="", label="Custom template (overrides the choice above)", placeholder="a photo of a {}."
            )
            with gr.Row():
                classify_button = gr.Button("Classify", variant="primary")
                similarity_button = gr.Button("Similarity of labels as written")
        with gr.Column(scale=2):
            results = _results_view(files)
            heatmap = gr.Image(label="Similarity heatmap", type="filepath", interactive=False, elem_id="heatmap")
            similarity_json = gr.JSON(label="Similarity matrix", visible=False)
            regions_view.build(ctx, files, labels, templates, custom_template)
    _examples(ctx, files, labels)
    figure_state = gr.State(None)

    def run_classify(
        files_,
        labels_,
        templates_=DEFAULT_TEMPLATES,
        custom_="",
        k_=DEFAULT_TOP_K,
        adapter_name=None,
        request: Optional[gr.Request] = None,
    ):
        adapter = ctx.sessions.adapter(session_of(request), adapter_name) if adapter_name else None
        return classify_images(ctx, files_, labels_, templates_, custom_, k_, adapter=adapter)

    def run_similarity(files_, texts_):
        return similarity_matrix(ctx, files_, texts_)

    def show_adapter(adapter_name, request: gr.Request):
        adapter = ctx.sessions.adapter(session_of(request), adapter_name) if adapter_name else None
        return gr.Group(visible=adapter is not None), adapter_markdown(adapter)

    inputs = [files, labels, templates, custom_template, top_k]
    if adapter_state is not None:
        inputs.append(adapter_state)
        # The session's fine-tuned adapter replaces the labels: say so next to the button, and offer the way back.
        adapter_state.change(
            user_errors(show_adapter), adapter_state, [adapter_box, adapter_note], api_visibility="private", queue=False
        )
        back_button.click(
            lambda: (None, gr.Group(visible=False), ""),
            None,
            [adapter_state, adapter_box, adapter_note],
            api_visibility="private",
            queue=False,
        )
    model: ListenerOptions = {"concurrency_id": "model", "concurrency_limit": ctx.model_concurrency}
    # The label check when the labels box is left, and from each classification's own "warnings".
    checked = gr.JSON(visible=False)
    labels.blur(
        user_errors(lambda labels_, templates_, custom_: check_labels(ctx, labels_, templates_, custom_)),
        [labels, templates, custom_template],
        checked,
        api_name="check_labels",
        **model,
    ).success(
        lambda found: warnings_markdown(found.get("warnings")),
        checked,
        label_warnings,
        queue=False,
        api_visibility="private",
    )
    figures: ListenerOptions = {"concurrency_id": "figures", "concurrency_limit": 2, "api_visibility": "private"}
    classified = classify_button.click(
        user_errors(run_classify), inputs, [results, figure_state], api_name="classify", **model
    )
    classified.success(user_errors(heatmaps.draw), figure_state, heatmap, **figures)
    classified.success(
        lambda found: warnings_markdown((found or {}).get("warnings")),
        results,
        label_warnings,
        queue=False,
        api_visibility="private",
    )
    similarity_button.click(
        user_errors(run_similarity), [files, labels], [similarity_json, figure_state], api_name="similarity", **model
    ).success(user_errors(heatmaps.draw), figure_state, heatmap, **figures)
