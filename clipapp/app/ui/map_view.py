"""The Search tab's map view: the chosen index drawn as a map (clipapp/viz/map_page.py's script in a gr.HTML);
a lasso drawn around images (or a dragged box, in the map's Box mode) fills the tab's "Selected images" box, from
which "Add to class" -> "Fine-tune on these", and "Tag these", go on as with picked search results. Lays out and
wires only: the map is actions.source_map."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import gradio as gr

from clipapp.app import actions
from clipapp.app.sessions import EXAMPLES
from clipapp.app.ui.common import AppContext, session_of, user_errors
from clipapp.viz.map_page import MAP_SCRIPT, drawn_payload, payload_json

SELECTED_ID = "search-selected"  # elem_id of the Search tab's "Selected images" box, which a map selection fills

# Runs once when the component mounts; redraws whenever a new map arrives (the template re-renders the data).
_ON_LOAD = (
    MAP_SCRIPT
    + """
let drawn = null;
const render = () => {
  const data = element.querySelector('.clipmap-data'), root = element.querySelector('.clipmap-root');
  if (!data || !root || !data.textContent.trim() || data.textContent === drawn) return;
  drawn = data.textContent;
  clipappMap(root, JSON.parse(drawn), paths => {
    const box = document.querySelector('#SELECTED textarea');
    box.value = paths.join('\\n');
    box.dispatchEvent(new Event('input', {bubbles: true}));
  });
};
new MutationObserver(render).observe(element, {childList: true, subtree: true, characterData: true});
render();
""".replace("SELECTED", SELECTED_ID)
)
_TEMPLATE = '<div class="clipmap-root"></div><pre hidden class="clipmap-data">${value}</pre>'


def image_url(path: str) -> str:
    return "/gradio_api/file=" + quote(path)


def build(ctx: AppContext, source: gr.Dropdown) -> None:
    """The map's controls, wired to `source` (the tab's index choice)."""
    with gr.Row():
        labels = gr.Textbox(label="Cluster names from these labels (comma separated; empty: a built-in list)", scale=3)
        draw = gr.Button("Draw the map", scale=1)
    view = gr.HTML("", html_template=_TEMPLATE, js_on_load=_ON_LOAD, elem_id="collection-map")

    def draw_map(source_=EXAMPLES, labels_="", request: Optional[gr.Request] = None):
        names = [t for t in (labels_ or "").split(",") if t.strip()]
        result = actions.source_map(ctx.sessions, source_, session_of(request), labels=names)
        return payload_json(drawn_payload(result, image_url))

    draw.click(user_errors(draw_map), [source, labels], view, api_name="collection_map", concurrency_id="figures")
