"""The Zero-shot tab's "where" section: region maps of the uploaded images for the labels, overlaid on each image.

"Show where" computes every label's map at once (the default method's cost does not grow with the labels) and
answers with the JSON of `clipapp explain --json` (the Gradio API's `explain`); the page then draws the overlays
in a chained event outside the model's concurrency group. Picking a label redraws from that JSON, without the
model: "all labels" shows a small grid of image x label overlays, one label shows it over each image.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
from pathlib import Path
from typing import Optional

import gradio as gr

from clipapp.app import actions
from clipapp.app.ui.common import AppContext, ListenerOptions, display_name, uploaded_paths, user_errors
from clipapp.images.decode import load_image
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.progress import ProgressFn
from clipapp.viz.region_overlay import overlay_png

ALL_LABELS = "all labels"
METHOD_CHOICES = [
    ("crops (points right on composites)", "crops"),
    ("occlusion", "occlusion"),
    ("gradcam (ResNet / ViT only)", "gradcam"),
]
MAX_OVERLAYS = 48  # "all labels" draws at most this many image x label overlays: a glance, not a report
OVERLAY_SLOTS = 256  # the ring of PNG files the overlays are written to (Gradio copies them into its cache)


def explain_images(
    ctx: AppContext,
    files,
    labels: str,
    templates: str,
    custom_template: str,
    method: str,
    progress: Optional[ProgressFn] = None,
) -> dict:
    """-> the JSON of `clipapp explain --json` for the uploaded images (named by their file names)."""
    paths = uploaded_paths(files)
    images = actions.load_named_images(paths, names=[display_name(p) for p in paths], limits=ctx.service.limits)
    chosen = custom_template.strip() if custom_template and custom_template.strip() else templates
    return actions.explain(
        ctx.service,
        [item.image for item in images],
        labels,
        names=[item.name for item in images],
        method=method or "crops",
        templates=chosen or DEFAULT_TEMPLATES,
        progress=progress,
    ).to_dict()


class OverlayFiles:
    """Overlay PNGs for the gallery, in a fixed ring of file names so the disk they take is bounded."""

    def __init__(self, slots: int = OVERLAY_SLOTS):
        self.folder = Path(tempfile.mkdtemp(prefix="clipapp-regions-"))
        self._names = itertools.cycle(range(slots))
        self._lock = threading.Lock()

    def draw(self, result: Optional[dict], files, label: Optional[str]) -> list[tuple[str, str]]:
        """(PNG path, caption) for each image x label to show: `label`'s over each image, or all labels'."""
        if not result or "results" not in result:
            return []
        paths = {display_name(p): p for p in uploaded_paths(files)}
        shown: list[tuple[str, str]] = []
        for item in result["results"]:
            if item["image"] not in paths:
                continue  # the upload was removed since
            entries = [e for e in item["labels"] if label in (None, ALL_LABELS) or e["label"] == label]
            if not entries or len(shown) >= MAX_OVERLAYS:
                continue
            image = load_image(paths[item["image"]])
            for entry in entries[: MAX_OVERLAYS - len(shown)]:
                with self._lock:
                    path = self.folder / f"overlay-{next(self._names)}.png"
                path.write_bytes(overlay_png(image, entry["grid"]))
                shown.append((str(path), f"{item['image']} · {entry['label']}"))
        return shown


def build(ctx: AppContext, files: gr.File, labels: gr.Textbox, templates: gr.Dropdown, custom: gr.Textbox) -> None:
    """The section, under the heatmap: a button, the method, the label to show, and the gallery of overlays."""
    overlays = OverlayFiles()
    with gr.Group():
        gr.Markdown("**Where does each label match?** Region maps over each image: red where the label matches most.")
        with gr.Row():
            method = gr.Dropdown(METHOD_CHOICES, value="crops", label="Method", scale=1)
            pick = gr.Dropdown([ALL_LABELS], value=ALL_LABELS, label="Label to show", scale=1, interactive=True)
            button = gr.Button("Show where", scale=1)
        gallery = gr.Gallery(label="Region maps", columns=4, height="auto", elem_id="region-maps", interactive=False)
        maps = gr.JSON(label="Region maps (JSON)", visible=False)

    def run_explain(files_, labels_, templates_=DEFAULT_TEMPLATES, custom_="", method_="crops", progress=gr.Progress()):
        def report(done: int, total: int, message: str) -> None:
            progress(done / max(total, 1), desc=message)  # ViT-B-32 on 2 CPUs: ~0.4 s an image (benchmarks.md)

        return explain_images(ctx, files_, labels_, templates_, custom_, method_, report)

    def redraw_all(result, files_, label_):
        """After a new computation: the label choices are the new labels (the one shown kept if still there)."""
        names = list(result.get("labels", [])) if result else []
        keep = label_ if label_ in names else ALL_LABELS
        return overlays.draw(result, files_, keep), gr.Dropdown(choices=[ALL_LABELS, *names], value=keep)

    model: ListenerOptions = {"concurrency_id": "model", "concurrency_limit": ctx.model_concurrency}
    figures: ListenerOptions = {"concurrency_id": "figures", "concurrency_limit": 2, "api_visibility": "private"}
    button.click(
        user_errors(run_explain), [files, labels, templates, custom, method], maps, api_name="explain", **model
    ).success(user_errors(redraw_all), [maps, files, pick], [gallery, pick], **figures)
    pick.input(user_errors(overlays.draw), [maps, files, pick], gallery, **figures)
