"""The ceiling for bench/load.py: a Gradio app with clipapp's /classify and /search_text inputs and outputs whose
handlers do nothing, under the same queue settings. Whatever rate it reaches is what Gradio itself allows here.

    python bench/noop_app.py PORT
"""

from __future__ import annotations

import sys

import gradio as gr

CONCURRENCY = 16  # as clipapp's model group (AppContext.model_concurrency)


def classify(files, labels, templates="simple", custom="", k=5):
    names = [str(f).rsplit("/", 1)[-1] for f in (files or [])]
    return {"model": "noop", "results": [{"image": n, "top": [{"label": "x", "prob": 1.0}]} for n in names]}


def search_text(source, query, templates="simple", k=12, threshold=-1):
    return {"results": []}


def main() -> None:
    with gr.Blocks() as demo:
        files = gr.File(file_count="multiple", file_types=["image"], type="filepath")
        labels, custom = gr.Textbox(), gr.Textbox(value="")
        templates = gr.Dropdown(["simple", "openai", "none"], value="simple")
        top_k = gr.Slider(1, 10, value=5, step=1)
        source = gr.Dropdown(["examples", "my uploads"], value="examples")
        query = gr.Textbox()
        k, threshold = gr.Slider(1, 100, value=12, step=1), gr.Slider(-1, 1, value=-1, step=0.01)
        results, hits = gr.JSON(), gr.JSON()
        button = gr.Button()
        button.click(classify, [files, labels, templates, custom, top_k], results, api_name="classify",
                     concurrency_id="model", concurrency_limit=CONCURRENCY)
        button.click(search_text, [source, query, templates, k, threshold], hits, api_name="search_text",
                     concurrency_id="model", concurrency_limit=CONCURRENCY)
    demo.queue(default_concurrency_limit=1, max_size=256)
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)


if __name__ == "__main__":
    main()
