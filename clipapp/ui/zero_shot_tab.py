"""The Zero-shot tab: images + labels -> top-k bars per image and a similarity heatmap."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from clipapp import tasks, viz
from clipapp.prompts import DEFAULT_TEMPLATES
from clipapp.ui.common import AppContext, display_name, uploaded_paths, user_errors

TEMPLATE_CHOICES = [("simple (7 templates)", "simple"), ("openai (80 templates)", "openai"),
                    ("none (label as written)", "none")]


def _load(files) -> list[tasks.NamedImage]:
    paths = uploaded_paths(files)
    return tasks.load_named_images(paths, names=[display_name(p) for p in paths])


def classify_images(ctx: AppContext, files, labels: str, templates: str, custom_template: str, top_k: float,
                    adapter=None):
    """-> (results JSON as in the CLI, heatmap of images x labels)."""
    images = _load(files)
    chosen = custom_template.strip() if custom_template and custom_template.strip() else templates
    result = tasks.classify(ctx.service, images, labels, templates=chosen, top_k=int(top_k), classifier=adapter)
    if adapter is not None:
        labels_used, cosine = adapter.class_names, adapter.cosine(ctx.service, [i.image for i in images])
    else:
        from clipapp.prompts import parse_labels

        labels_used = parse_labels(labels)
        cosine = ctx.service.encode_images([i.image for i in images]) @ ctx.service.text_embeddings(labels_used, chosen).T
    figure = viz.similarity_heatmap(cosine, [i.image for i in images], labels_used,
                                    title="Cosine similarity of images and label classifiers")
    return result, figure


def adapter_markdown(adapter) -> str:
    if adapter is None:
        return ""
    classes = ", ".join(adapter.class_names[:12]) + (" …" if len(adapter.class_names) > 12 else "")
    return (f"**Using the fine-tuned adapter `{adapter.name}`** ({adapter.mode}) for Classify: classes {classes}. "
            "The labels box is ignored while it is active.")


def similarity_matrix(ctx: AppContext, files, texts: str):
    """-> (similarity JSON as in the CLI, heatmap of images x texts as written)."""
    images = _load(files)
    result = tasks.similarity(ctx.service, images, texts)
    figure = viz.similarity_heatmap(result["matrix"], [i.image for i in images], result["texts"])
    return result, figure


def build_tab(ctx: AppContext, adapter_state: Optional[gr.State] = None) -> None:
    photos = sorted((ctx.examples_dir / "photos").glob("*.jpg"))
    fashion = sorted((ctx.examples_dir / "fashion").glob("*.png"))
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath")
            # shown while this session's fine-tuned adapter replaces the labels
            with gr.Group(visible=False) as adapter_box:
                adapter_note = gr.Markdown(elem_id="adapter-note")
                back_button = gr.Button("Back to plain zero-shot", size="sm")
            labels = gr.Textbox(label="Labels (comma or newline separated)", lines=3,
                                placeholder="cat, dog, a cup of coffee")
            with gr.Row():
                templates = gr.Dropdown(TEMPLATE_CHOICES, value=DEFAULT_TEMPLATES, label="Prompt templates")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k")
            custom_template = gr.Textbox(label="Custom template (overrides the choice above)",
                                         placeholder="a photo of a {}.")
            with gr.Row():
                classify_button = gr.Button("Classify", variant="primary")
                similarity_button = gr.Button("Similarity of labels as written")
        with gr.Column(scale=2):
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
                            gr.Image(paths[item["image"]], show_label=False, height=140, scale=1,
                                     interactive=False, buttons=[])
                        gr.Label({t["label"]: t["prob"] for t in item["top"]}, label=item["image"],
                                 num_top_classes=len(item["top"]), scale=3)

            heatmap = gr.Plot(label="Similarity heatmap")
            similarity_json = gr.JSON(label="Similarity matrix", visible=False)

    def run_classify(files_, labels_, templates_, custom_, k_, adapter_=None):
        return classify_images(ctx, files_, labels_, templates_, custom_, k_, adapter=adapter_)

    inputs = [files, labels, templates, custom_template, top_k]
    if adapter_state is not None:
        inputs.append(adapter_state)
        # The session's fine-tuned adapter replaces the labels: say so next to the button, and offer the way back.
        adapter_state.change(lambda adapter: (gr.Group(visible=adapter is not None), adapter_markdown(adapter)),
                             adapter_state, [adapter_box, adapter_note], api_visibility="private", queue=False)
        back_button.click(lambda: (None, gr.Group(visible=False), ""), None, [adapter_state, adapter_box, adapter_note],
                          api_visibility="private", queue=False)
    classify_button.click(user_errors(run_classify), inputs, [results, heatmap], api_name="classify",
                          concurrency_id="model")
    similarity_button.click(user_errors(lambda f, t: similarity_matrix(ctx, f, t)), [files, labels],
                            [similarity_json, heatmap], api_name="similarity", concurrency_id="model")
    if photos:
        gr.Examples(
            examples=[
                [[str(p) for p in photos], "astronaut, cat, cup of coffee, rocket, motorcycle, horse, camera, page of text"],
                [[str(p) for p in fashion], "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"],
            ],
            inputs=[files, labels],
            label="Examples",
        )
