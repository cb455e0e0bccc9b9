"""The Search tab's near-duplicates view: a threshold, a button, and the groups as rows of thumbnails (keeper first)
with size, resolution, date and path. Lays out and wires only: the groups come from `actions.source_duplicates`."""

from __future__ import annotations

import base64
import html
import io
from typing import Optional

import gradio as gr

from clipapp.app import actions
from clipapp.app.sessions import EXAMPLES
from clipapp.app.ui.common import session_of, user_errors
from clipapp.index.duplicates import DEFAULT_THRESHOLD
from clipapp.index.results import GRADIO_FILE_KEY

MAX_GROUPS_SHOWN = 60  # the page's HTML carries each thumbnail inline (~3 kB each): bounded, the JSON has all
THUMBNAIL_PX = 96


def _thumbnail(path: str) -> str:
    """A small inline JPEG (data URI) of the image, or "" if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL_PX * 2, THUMBNAIL_PX * 2))
            small = image.convert("RGB")
            small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(image: dict, keep: bool) -> str:
    path = image[GRADIO_FILE_KEY]
    return (
        f'<figure class="dup-image{" dup-keep" if keep else ""}" style="margin:0 8px 0 0;width:160px">'
        f'<img src="{_thumbnail(path)}" alt="" style="max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px">'
        f'<figcaption style="font-size:12px">{"<b>keep</b> " if keep else ""}{image["width"]}x{image["height"]}, '
        f"{image['size'] / 1e3:.0f} kB<br>{html.escape(image['date'])}<br>"
        f'<span class="dup-path" style="word-break:break-all">{html.escape(path)}</span></figcaption></figure>'
    )


def groups_html(result: Optional[dict]) -> str:
    """The groups of a `DuplicateReport.for_gradio` JSON as rows of thumbnails."""
    groups = (result or {}).get("groups", [])
    if not groups:
        return "<p>No near-duplicates found.</p>" if result else ""
    rows = [
        '<div class="dup-group" style="display:flex;flex-wrap:wrap;margin-bottom:12px">'
        + "".join(_card(image, image[GRADIO_FILE_KEY] == group["keep"]) for image in group["images"])
        + "</div>"
        for group in groups[:MAX_GROUPS_SHOWN]
    ]
    more = len(groups) - MAX_GROUPS_SHOWN
    note = f"<p>{more} more groups: see the JSON (or `clipapp duplicates --csv`).</p>" if more > 0 else ""
    return f"<p>{len(groups)} groups, the suggested keeper first.</p>" + "".join(rows) + note


def build_view(ctx, source: gr.Dropdown) -> None:
    """The accordion and its events; `source` is the Search tab's index dropdown."""
    with gr.Accordion("Near-duplicates in this index", open=False, elem_id="duplicates"):
        with gr.Row():
            threshold = gr.Slider(0.5, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Min similarity")
            button = gr.Button("Find near-duplicates", elem_id="find-duplicates")
        view = gr.HTML(elem_id="duplicate-groups")
        result = gr.JSON(visible=False)

    def find(source_=EXAMPLES, threshold_=DEFAULT_THRESHOLD, request: Optional[gr.Request] = None):
        report = actions.source_duplicates(ctx.sessions, source_, session_of(request), threshold=float(threshold_))
        return report.for_gradio()

    button.click(
        user_errors(find), [source, threshold], result, api_name="find_duplicates", concurrency_id="index",
        concurrency_limit=1,
    ).success(groups_html, result, view, api_visibility="private")  # fmt: skip
