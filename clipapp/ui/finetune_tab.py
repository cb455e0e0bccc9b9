"""The Fine-tune tab: labelled images (a zip of class folders, or per-class uploads) -> an adapter, with live curves,
before/after accuracy and a confusion matrix. The adapter becomes this browser session's classifier in the Zero-shot
tab and can be downloaded. The work itself is `clipapp.finetune.finetune`; this file only collects inputs and draws.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import gradio as gr
import numpy as np

from clipapp import viz
from clipapp.errors import ClipAppError
from clipapp.finetune import (
    MODE_DEFAULTS,
    FinetuneConfig,
    extract_labelled_zip,
    finetune,
    labelled_folder,
    labelled_uploads,
)
from clipapp.finetune.intake import labelled_selection
from clipapp.jobs import Job
from clipapp.sessions import EXAMPLES
from clipapp.ui.common import IMAGE_FILE_TYPES, AppContext, Files, display_name, session_of, uploaded_paths, user_errors

log = logging.getLogger(__name__)

CLASS_ROWS = 4  # per-class upload rows; more classes come as a zip
MAX_UI_IMAGES = 2000  # one fine-tune holds the CPU for everyone: keep a browser request to a few-shot size
CURVE_REFRESH_S = 0.4  # redraw the live curves at most this often
MODE_CHOICES = [
    ("Linear head from the zero-shot weights (fast, default)", "head"),
    ("Cache adapter, training-free (Tip-Adapter)", "cache"),
    ("Last visual blocks + head (slow on a CPU)", "partial"),
]
LOSS_CHOICES = [
    ("cross-entropy", "cross-entropy"),
    ("focal (hard examples)", "focal"),
    ("class-balanced (imbalanced classes)", "class-balanced"),
]
WISE_CHOICES = ["auto", "0", "0.25", "0.5", "0.75", "1"]
DEFAULTS = FinetuneConfig()


def collect_labelled(zip_file, rows: list[tuple[str, object]], workdir: Path):
    """(zip of class folders) + (class name, uploaded files) rows -> LabelledImages; a class may come from both."""
    items, names = [], []
    if zip_file:
        root = extract_labelled_zip(uploaded_paths(zip_file)[0], workdir / "zip")
        folder = labelled_folder(root)
        for path, target in zip(folder.sources, folder.targets, strict=True):
            items.append((path, folder.class_names[target]))
            names.append(display_name(path))
    for class_name, files in rows:
        paths = uploaded_paths(files)
        class_name = " ".join((class_name or "").split())
        if paths and not class_name:
            raise ClipAppError("A class row has images but no class name: type the class name next to them.")
        if class_name and not paths:
            raise ClipAppError(f"Class {class_name!r} has no images: upload a few, or clear its name.")
        items += [(p, class_name) for p in paths]
        names += [display_name(p) for p in paths]
    if not items:
        raise ClipAppError(
            "No labelled images: upload a zip of class folders (<class>/<images>) or fill the class "
            "rows (a name and a few images each)."
        )
    if len(items) > MAX_UI_IMAGES:
        raise ClipAppError(
            f"{len(items)} images given; the web app fine-tunes on at most {MAX_UI_IMAGES}. "
            "Use `python -m clipapp finetune` for more."
        )
    return labelled_uploads(items, names=names)


def make_config(
    mode: str,
    epochs: float,
    blocks: float,
    mixup: float,
    label_smoothing: float,
    ema: float,
    sam: float,
    loss: str,
    wise_alpha: float,
    seed: float,
) -> FinetuneConfig:
    return FinetuneConfig(
        mode=mode or DEFAULTS.mode,
        epochs=None if epochs is None else int(epochs),
        blocks=int(blocks),
        mixup=float(mixup),
        label_smoothing=float(label_smoothing),
        ema=float(ema),
        sam=float(sam),
        focal=2.0 if loss == "focal" else 0.0,
        class_balanced=0.999 if loss == "class-balanced" else 0.0,
        wise_alpha=parse_wise_alpha(wise_alpha),
        seed=int(seed),
    ).validate()


def parse_wise_alpha(value) -> Optional[float]:
    """ "auto" (or empty) -> None, chosen on held-out data; otherwise a number in [0, 1]."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ClipAppError(f"WiSE-FT alpha must be 'auto' or a number between 0 and 1, got {value!r}.") from None


def summary_markdown(result, adapter_name: str) -> str:
    lines = []
    if result.before and result.after:
        kind = result.validation["kind"]
        how = {"holdout": "a held-out part", "kfold": f"{result.validation['folds']}-fold cross-validation"}.get(
            kind, kind
        )
        lines.append(
            f"### Top-1 accuracy: zero-shot **{result.before['top1']:.1%}** → adapted **{result.after['top1']:.1%}**"
        )
        lines.append(
            f"on {result.after['n']} held-out images ({how}, which also picked the epoch count); "
            f"top-5 {result.before['top5']:.1%} → {result.after['top5']:.1%}. "
            f"Best epoch: {result.best_epoch}."
        )
    if result.stopped:
        lines.append("Stopped early: the adapter is the best model so far.")
    lines += [f"- {note}" for note in result.notes]
    if result.skipped:
        lines.append(f"- Skipped {len(result.skipped)} unreadable file(s): {'; '.join(result.skipped[:3])}")
    lines.append(
        f"\nAdapter **{adapter_name}** ({', '.join(result.class_names)}) is now used by the Zero-shot tab "
        "in this browser session."
    )
    return "\n\n".join(lines)


def _curves(history: dict, title: str):
    series = {k: v for k, v in history.items() if k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
    return viz.training_curves(series, title=title)


def _downloadable(paths: list[Path]) -> list[str]:
    """Gradio serves files under the working folder or the temp folder; copy the adapter there if it is elsewhere."""
    roots = [Path(os.getcwd()).resolve(), Path(tempfile.gettempdir()).resolve()]
    if all(any(root in p.resolve().parents for root in roots) and not p.name.startswith(".") for p in paths):
        return [str(p) for p in paths]
    folder = Path(tempfile.mkdtemp(prefix="clipapp-adapter-"))
    return [shutil.copy2(p, folder / p.name) for p in paths]


def session_adapter_name(request: Optional[gr.Request]) -> str:
    session = re.sub(r"[^A-Za-z0-9]", "", getattr(request, "session_hash", None) or "")[:12] or "local"
    return f"adapter-{session}-{time.strftime('%Y%m%d-%H%M%S')}"


def follow_finetune(
    ctx: AppContext,
    data: Callable[[], object],
    config: FinetuneConfig,
    request: Optional[gr.Request],
    progress,
    cleanup: Optional[Callable[[], None]] = None,
):
    """Run a fine-tune on `data()` (LabelledImages, made in the job's thread) as this session's job, yielding the
    Fine-tune tab's outputs: live curves while it trains, then the summary, figures, report, adapter files and the
    adapter's name for the session state. `cleanup` runs in the job's thread when the work ends, however it ends.
    Used by this tab and by the Search tab's "Fine-tune on these"."""
    name = session_adapter_name(request)
    session = session_of(request)

    def work(should_stop, emit):
        try:
            return finetune(
                ctx.service,
                data(),
                config,
                name=name,
                stop=should_stop,
                progress=lambda f, m: emit("progress", f, m),
                on_epoch=lambda h: emit("epoch", h),
            )
        finally:
            if cleanup is not None:
                cleanup()

    # The work runs in its own thread; closing this generator (a cancelled or disconnected event) stops it.
    job = ctx.jobs.start(session or name, Job(name, work))
    skip = gr.skip()
    last_draw, pending = 0.0, None
    for event in job.events(CURVE_REFRESH_S):
        if event is not None and event.kind == "progress":
            progress(*event.payload)
        elif event is not None and event.kind == "epoch":
            pending = event.payload[0]
        if pending is not None and time.monotonic() - last_draw >= CURVE_REFRESH_S:
            figure = _curves(pending, f"{pending.get('stage') or ''}live".strip())
            pending, last_draw = None, time.monotonic()
            yield skip, figure, skip, skip, skip, skip
        else:
            yield skip, skip, skip, skip, skip, skip  # a turn for Gradio to cancel us between events
    result = job.result
    adapter = result.adapter
    weights, meta = (
        ctx.sessions.save_adapter(session, adapter) if session else adapter.save(ctx.state_dir / "adapters" / name)
    )
    title = {"cache": "cache adapter: no training"}.get(
        config.mode, "held-out curves (mean over folds)" if result.validation["kind"] == "kfold" else "curves"
    )
    confusion_figure = None
    if result.confusion_after is not None:
        confusion_figure = viz.confusion_matrix_figure(np.asarray(result.confusion_after), result.class_names)
    payload = {"adapter": adapter.name, **result.to_dict()}
    yield (
        summary_markdown(result, adapter.name),
        _curves(result.history, title),
        confusion_figure,
        payload,
        _downloadable([weights, meta]),
        adapter.name if session else None,
    )


@dataclass
class FinetuneHandles:
    settings: list  # the settings components, in make_config's order
    outputs: list  # what follow_finetune yields into


def build_tab(ctx: AppContext, adapter_state: gr.State) -> FinetuneHandles:
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(
                "Give a few labelled images per class: a **zip of class folders** (`<class>/<images>`), "
                "or the class rows below, or both. Then press **Fine-tune**."
            )
            zip_file = gr.File(label="Labelled images: zip of class folders", file_types=[".zip"], type="filepath")
            rows = []
            with gr.Accordion("…or upload images per class", open=False):
                for i in range(CLASS_ROWS):
                    with gr.Row(equal_height=True):
                        name = gr.Textbox(label=f"Class {i + 1}", placeholder="class name", scale=1)
                        files = Files(
                            label=f"Class {i + 1} images", file_types=IMAGE_FILE_TYPES, type="filepath", scale=2
                        )
                    rows += [name, files]
            with gr.Accordion("Settings (good defaults preset)", open=False):
                mode = gr.Radio(MODE_CHOICES, value=DEFAULTS.mode, label="What to train")
                with gr.Row():
                    epochs = gr.Slider(0, 200, value=DEFAULTS.epochs, step=1, label="Epochs (max; early stopping)")
                    blocks = gr.Slider(1, 12, value=DEFAULTS.blocks, step=1, label="Visual blocks (partial mode)")
                with gr.Row():
                    mixup = gr.Slider(0, 1, value=DEFAULTS.mixup, step=0.05, label="Mixup alpha (0 = off)")
                    label_smoothing = gr.Slider(
                        0, 0.3, value=DEFAULTS.label_smoothing, step=0.01, label="Label smoothing"
                    )
                with gr.Row():
                    ema = gr.Slider(0, 0.999, value=DEFAULTS.ema, step=0.001, label="Weight EMA decay (0 = off)")
                    sam = gr.Slider(0, 0.2, value=DEFAULTS.sam, step=0.01, label="SAM rho (0 = off)")
                loss = gr.Radio(LOSS_CHOICES, value="cross-entropy", label="Loss")
                with gr.Row():
                    wise_alpha = gr.Dropdown(
                        WISE_CHOICES,
                        value="auto",
                        allow_custom_value=True,
                        label="WiSE-FT alpha (0 = zero-shot weights, 1 = fine-tuned; auto = best on held-out images)",
                    )
                    seed = gr.Number(value=DEFAULTS.seed, precision=0, label="Seed")
            with gr.Row():
                run_button = gr.Button("Fine-tune", variant="primary")
                stop_button = gr.Button("Stop")
        with gr.Column(scale=2):
            summary = gr.Markdown("Results appear here: accuracy before and after, curves, confusion matrix.")
            curves = gr.Plot(label="Training curves")
            confusion = gr.Plot(label="Confusion matrix on the held-out images (adapted)")
            report = gr.JSON(label="Report")
            download = gr.File(
                label="Adapter (.safetensors + .json): python -m clipapp classify --adapter ...",
                file_count="multiple",
                interactive=False,
            )

    def run_finetune(
        zip_file=None,
        class_1=None,
        images_1=None,
        class_2=None,
        images_2=None,
        class_3=None,
        images_3=None,
        class_4=None,
        images_4=None,
        mode=DEFAULTS.mode,
        epochs=None,
        blocks=DEFAULTS.blocks,
        mixup=DEFAULTS.mixup,
        label_smoothing=DEFAULTS.label_smoothing,
        ema=DEFAULTS.ema,
        sam=DEFAULTS.sam,
        loss="cross-entropy",
        wise_alpha="auto",
        seed=DEFAULTS.seed,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        config = make_config(mode, epochs, blocks, mixup, label_smoothing, ema, sam, loss, wise_alpha, seed)
        class_rows = [(class_1, images_1), (class_2, images_2), (class_3, images_3), (class_4, images_4)]
        workdir = Path(tempfile.mkdtemp(prefix="clipapp-finetune-"))

        # The images extracted from the zip are read while training: removed by the job when it has ended.
        yield from follow_finetune(
            ctx,
            lambda: collect_labelled(zip_file, class_rows, workdir),
            config,
            request,
            progress,
            cleanup=lambda: shutil.rmtree(workdir, ignore_errors=True),
        )

    def stop_finetune(request: gr.Request):
        session = session_of(request)
        if session:
            ctx.jobs.stop(session)

    settings = [mode, epochs, blocks, mixup, label_smoothing, ema, sam, loss, wise_alpha, seed]
    # Each mode has its own measured schedule (MODE_DEFAULTS): head 80 epochs, partial 30; the slider follows it.
    mode.change(
        lambda m: gr.update(value=MODE_DEFAULTS[m or DEFAULTS.mode]["epochs"]),
        mode,
        epochs,
        api_visibility="private",
        queue=False,
    )
    outputs = [summary, curves, confusion, report, download, adapter_state]
    run_button.click(
        user_errors(run_finetune),
        [zip_file, *rows, *settings],
        outputs,
        api_name="finetune",
        concurrency_id="finetune",
        concurrency_limit=1,
    )
    # Not queued behind the fine-tune it stops: its own group, no limit.
    stop_button.click(stop_finetune, None, None, concurrency_limit=None, api_visibility="private")
    return FinetuneHandles(settings=settings, outputs=outputs)


def wire_selection(
    ctx: AppContext,
    button: gr.Button,
    source: gr.Dropdown,
    selection: gr.Textbox,
    handles: FinetuneHandles,
    tabs: gr.Tabs,
) -> None:
    """The Search tab's "Fine-tune on these": show the Fine-tune tab, then run its flow (its settings, its outputs)
    on the classes collected from search results. Every path must be an image of the chosen index."""

    def finetune_selection(
        selection_=None,
        source_=EXAMPLES,
        mode=DEFAULTS.mode,
        epochs=None,
        blocks=DEFAULTS.blocks,
        mixup=DEFAULTS.mixup,
        label_smoothing=DEFAULTS.label_smoothing,
        ema=DEFAULTS.ema,
        sam=DEFAULTS.sam,
        loss="cross-entropy",
        wise_alpha="auto",
        seed=DEFAULTS.seed,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        config = make_config(mode, epochs, blocks, mixup, label_smoothing, ema, sam, loss, wise_alpha, seed)
        session = session_of(request)
        # Checked here, before the job starts, so a refused path is a message at once.
        with ctx.sessions.searchable(source_, session) as index:
            data = labelled_selection(selection_, index)
        if len(data) > MAX_UI_IMAGES:
            raise ClipAppError(f"{len(data)} images selected; the web app fine-tunes on at most {MAX_UI_IMAGES}.")
        yield from follow_finetune(ctx, lambda: data, config, request, progress)

    button.click(lambda: gr.Tabs(selected="fine-tune"), None, tabs, queue=False, api_visibility="private").then(
        user_errors(finetune_selection),
        [selection, source, *handles.settings],
        handles.outputs,
        api_name="finetune_selection",
        concurrency_id="finetune",
        concurrency_limit=1,
    )
