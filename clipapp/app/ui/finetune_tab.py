"""The Fine-tune tab: labelled images (a zip of class folders, or per-class uploads) -> an adapter, with live curves,
before/after accuracy and a confusion matrix. The adapter becomes this browser session's classifier in the Zero-shot
tab and can be downloaded. The work itself is `actions.finetune_for_session`; this file only collects inputs and draws
(the settings' controls: clipapp/app/ui/finetune_settings.py).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import gradio as gr
import numpy as np

from clipapp.app import actions
from clipapp.app.jobs import Job
from clipapp.app.sessions import EXAMPLES
from clipapp.app.ui.common import (
    IMAGE_FILE_TYPES,
    AppContext,
    Files,
    session_of,
    uploaded_paths,
    user_errors,
)
from clipapp.app.ui.finetune_settings import (
    PAGE_SETTINGS,
    SETTING_NAMES,
    SettingControl,
    make_config,
    settings_control,
    settings_handler,
)
from clipapp.finetune import FinetuneConfig
from clipapp.finetune.intake import LabelledImages
from clipapp.images.decode import load_image
from clipapp.lru import LRU
from clipapp.progress import TimeLeft
from clipapp.viz import figures as viz

log = logging.getLogger(__name__)

CLASS_ROWS = 4  # per-class upload rows; more classes come as a zip
CURVE_REFRESH_S = 0.4  # redraw the live curves at most this often
EXAMPLE_BUTTON = "Try an example: 4 kinds of clothing (Fashion-MNIST), 8 images each"
REVIEW_THUMB_SIDE = 96  # the suspects' thumbnails, decoded small: the gallery shows them, nothing else reads them


class DroppedImages:
    """Per browser session, the images the "Check my labels" step dropped (their `actions.image_key`s), read when
    that session's next fine-tune starts. Bounded: the least recently used sessions' choices go first."""

    def __init__(self, sessions: int = 256):
        self._keys: LRU[str, tuple[str, ...]] = LRU(sessions)
        self._lock = threading.Lock()

    def set(self, session: str, keys: Sequence[str]) -> None:
        if session:
            with self._lock:
                self._keys.put(session, tuple(keys))

    def get(self, session: str) -> tuple[str, ...]:
        with self._lock:
            return self._keys.get(session) or ()


def upload_handler(body: Callable, leading: Sequence[tuple[str, object]]) -> Callable:
    """`body(**uploads, request=)` as a Gradio handler whose parameters are the upload inputs `leading` (name,
    default) and the request: gradio_client names the endpoint's parameters after this signature."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(name, keyword, default=default) for name, default in leading]
    parameters.append(inspect.Parameter("request", keyword, default=None, annotation=Optional[gr.Request]))
    signature = inspect.Signature(parameters)

    def handler(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return body(**bound.arguments)

    handler.__signature__ = signature  # type: ignore[attr-defined]  # inspect.signature (Gradio) reads it
    handler.__annotations__ = {"request": Optional[gr.Request]}  # Gradio finds the request by its annotation
    handler.__name__ = handler.__qualname__ = body.__name__
    return handler


def review_outputs(review: actions.LabelReview, thumbs: list):
    """The review's JSON, its text (warnings, how many suspects), the gallery and the drop choices."""
    lines = [f"- ⚠ {w.message}" for w in review.warnings]
    if review.suspects:
        lines.append(
            f"**{len(review.suspects)} image(s) whose class the model doubts**, most suspect first. "
            "Tick the ones to leave out, then press **Fine-tune**."
        )
    else:
        lines.append("The model agrees with every image's class.")
    captions = [f"{s.given} → {s.predicted}? ({s.score:.2f}) {s.image}" for s in review.suspects]
    return (
        review.to_dict(),
        "\n".join(lines),
        list(zip(thumbs, captions, strict=True)),
        gr.CheckboxGroup(choices=list(zip(captions, review.keys, strict=True)), value=[]),
    )


def collect_labelled(zip_file, rows: list[tuple[str, Optional[Sequence]]], workdir: Path) -> LabelledImages:
    """The page's uploads (a zip of class folders, (class name, files) rows) -> `actions.labelled_page_uploads`."""
    zip_path = uploaded_paths(zip_file)[0] if zip_file else None
    class_rows = [(name, uploaded_paths(files)) for name, files in rows]
    return actions.labelled_page_uploads(zip_path, class_rows, workdir)


def plan_markdown(plan) -> str:
    """The planner's choice, shown before training starts (plan.Plan.line: "about 50 s: head + last 1 block, ...")."""
    return f"**Plan:** {plan.line()}. Training starts now; the bar below shows the time left."


def ran_line(result) -> str:
    """What ran, its estimate and how long it took, for the summary."""
    plan, took = result.plan, result.seconds.get("total", 0.0)
    if plan is None:
        return f"Took {took:.0f} s."
    return f"Ran: {plan.label}; estimated about {plan.seconds:.0f} s, took {took:.0f} s."


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
    lines.append(ran_line(result))
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
    return [str(shutil.copy2(p, folder / p.name)) for p in paths]


def session_adapter_name(request: Optional[gr.Request]) -> str:
    session = re.sub(r"[^A-Za-z0-9]", "", getattr(request, "session_hash", None) or "")[:12] or "local"
    return f"adapter-{session}-{time.strftime('%Y%m%d-%H%M%S')}"


def follow_finetune(
    ctx: AppContext,
    data: Callable[[], LabelledImages],
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
        eta = TimeLeft()

        def planned(plan) -> None:
            eta.expect(plan.seconds)
            emit("plan", plan)

        try:
            return actions.finetune_for_session(
                ctx.sessions,
                session,
                data(),
                config,
                name=name,
                stop=should_stop,
                # the job's "progress" event carries (fraction, message), what gr.Progress draws
                progress=lambda done, total, m: emit("progress", done / max(1, total), eta.message(done, total, m)),
                on_epoch=lambda h: emit("epoch", h),
                on_plan=planned,
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
        elif event is not None and event.kind == "plan":
            yield plan_markdown(event.payload[0]), skip, skip, skip, skip, skip
            continue
        elif event is not None and event.kind == "epoch":
            pending = event.payload[0]
        if pending is not None and time.monotonic() - last_draw >= CURVE_REFRESH_S:
            figure = _curves(pending, f"{pending.get('stage') or ''}live".strip())
            pending, last_draw = None, time.monotonic()
            yield skip, figure, skip, skip, skip, skip
        else:
            yield skip, skip, skip, skip, skip, skip  # a turn for Gradio to cancel us between events
    kept = job.result
    result, adapter = kept.result, kept.result.adapter
    curves_title = "held-out curves (mean over folds)" if result.validation["kind"] == "kfold" else "curves"
    title = {"cache": "cache adapter: no training"}.get(result.config.mode or "", curves_title)
    confusion_figure = None
    if result.confusion_after is not None:
        confusion_figure = viz.confusion_matrix_figure(np.asarray(result.confusion_after), result.class_names)
    yield (
        summary_markdown(result, adapter.name),
        _curves(result.history, title),
        confusion_figure,
        kept.to_dict(),
        _downloadable(list(kept.files)),
        adapter.name if session else None,
    )


def _wire_example_set(ctx: AppContext, button: gr.Button, per_class: gr.Accordion, rows: list) -> None:
    """The example button: the bundled labelled set fills the class rows (names and images) and opens them, so
    **Fine-tune** can run at once."""

    def load_example_set():
        found = actions.example_class_rows(ctx.finetune_example_dir, CLASS_ROWS)
        found += [("", [])] * (CLASS_ROWS - len(found))
        values = [value for name, paths in found for value in (name, paths or None)]
        return [gr.Accordion(open=True), *values]

    button.click(user_errors(load_example_set), None, [per_class, *rows], queue=False, api_visibility="private")


@dataclass
class FinetuneHandles:
    settings: list  # the settings' controls, in SETTING_NAMES order
    outputs: list  # what follow_finetune yields into


def build_tab(ctx: AppContext, adapter_state: gr.State) -> FinetuneHandles:
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(
                "Give a few labelled images per class: a **zip of class folders** (`<class>/<images>`), "
                "or the class rows below, or both. Then press **Fine-tune**."
            )
            example_button = gr.Button(EXAMPLE_BUTTON, size="sm", elem_id="finetune-example")
            zip_file = gr.File(label="Labelled images: zip of class folders", file_types=[".zip"], type="filepath")
            rows = []
            with gr.Accordion("…or upload images per class", open=False) as per_class:
                for i in range(CLASS_ROWS):
                    with gr.Row(equal_height=True):
                        name = gr.Textbox(label=f"Class {i + 1}", placeholder="class name", scale=1)
                        files = Files(
                            label=f"Class {i + 1} images", file_types=IMAGE_FILE_TYPES, type="filepath", scale=2
                        )
                    rows += [name, files]
            controls: dict[str, SettingControl] = {}
            with gr.Accordion("Settings (good defaults preset)", open=False):
                for row in PAGE_SETTINGS:
                    with gr.Row():
                        for setting in row:
                            controls[setting] = settings_control(setting)
            with gr.Row():
                check_button = gr.Button("Check my labels")
                run_button = gr.Button("Fine-tune", variant="primary")
                stop_button = gr.Button("Stop")
            with gr.Group():
                review_text = gr.Markdown(elem_id="label-review")
                review_gallery = gr.Gallery(label="Most suspect images", columns=4, height="auto", elem_id="suspects")
                drop_box = gr.CheckboxGroup(label="Leave these out of the fine-tune", choices=[], elem_id="drop")
                review_json = gr.JSON(visible=False)
        with gr.Column(scale=2):
            summary = gr.Markdown("Results appear here: accuracy before and after, curves, confusion matrix.")
            curves = gr.Plot(label="Training curves")
            confusion = gr.Plot(label="Confusion matrix on the held-out images (adapted)")
            report = gr.JSON(label="Report", elem_id="finetune-report")
            download = gr.File(
                label="Adapter (.safetensors + .json): python -m clipapp classify --adapter ...",
                file_count="multiple",
                interactive=False,
            )

    _wire_example_set(ctx, example_button, per_class, rows)
    dropped = DroppedImages()
    upload_parameters = [("zip_file", None)]
    upload_parameters += [(f"{kind}_{i}", None) for i in range(1, CLASS_ROWS + 1) for kind in ("class", "images")]

    def run_finetune(values, zip_file=None, request=None, progress=None, **rows):
        config = make_config(values)
        class_rows = [(rows[f"class_{i}"], rows[f"images_{i}"]) for i in range(1, CLASS_ROWS + 1)]
        workdir = Path(tempfile.mkdtemp(prefix="clipapp-finetune-"))
        drop = dropped.get(session_of(request))  # what "Check my labels" left out, for this session

        # The images extracted from the zip are read while training: removed by the job when it has ended.
        yield from follow_finetune(
            ctx,
            lambda: actions.drop_images(collect_labelled(zip_file, class_rows, workdir), drop),
            config,
            request,
            progress,
            cleanup=lambda: shutil.rmtree(workdir, ignore_errors=True),
        )

    def review(zip_file=None, request: Optional[gr.Request] = None, **rows_):
        """The "Check my labels" step: the class names' warnings and the most suspect images, before training."""
        class_rows = [(rows_[f"class_{i}"], rows_[f"images_{i}"]) for i in range(1, CLASS_ROWS + 1)]
        workdir = Path(tempfile.mkdtemp(prefix="clipapp-review-"))
        try:
            found = actions.review_labels(ctx.service, collect_labelled(zip_file, class_rows, workdir))
            thumbs = [load_image(source, min_side=REVIEW_THUMB_SIDE) for source in found.sources]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # the thumbnails are in memory
        dropped.set(session_of(request), ())  # a new review starts with nothing left out
        return review_outputs(found, thumbs)

    check_button.click(
        user_errors(upload_handler(review, upload_parameters)),
        [zip_file, *rows],
        [review_json, review_text, review_gallery, drop_box],
        api_name="review_labels",
        concurrency_id="model",
        concurrency_limit=ctx.model_concurrency,
    )

    def keep_dropped(keys, request: gr.Request):
        dropped.set(session_of(request), keys or ())

    drop_box.change(
        keep_dropped,
        drop_box,
        None,
        api_visibility="private",
        queue=False,
    )

    def stop_finetune(request: gr.Request):
        session = session_of(request)
        if session:
            ctx.jobs.stop(session)

    setting_controls = [controls[name] for name in SETTING_NAMES]
    outputs = [summary, curves, confusion, report, download, adapter_state]
    run_button.click(
        user_errors(settings_handler(run_finetune, upload_parameters)),
        [zip_file, *rows, *setting_controls],
        outputs,
        api_name="finetune",
        concurrency_id="finetune",
        concurrency_limit=1,
    )
    # Not queued behind the fine-tune it stops: its own group, no limit.
    stop_button.click(stop_finetune, None, None, concurrency_limit=None, api_visibility="private")
    return FinetuneHandles(settings=setting_controls, outputs=outputs)


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

    def finetune_selection(values, selection_=None, source_=EXAMPLES, request=None, progress=None):
        config = make_config(values)
        session = session_of(request)
        # Checked here, before the job starts, so a refused path is a message at once.
        data = actions.labelled_source_picks(ctx.sessions, source_, session, selection_)
        yield from follow_finetune(ctx, lambda: data, config, request, progress)

    button.click(lambda: gr.Tabs(selected="fine-tune"), None, tabs, queue=False, api_visibility="private").then(
        user_errors(settings_handler(finetune_selection, [("selection_", None), ("source_", EXAMPLES)])),
        [selection, source, *handles.settings],
        handles.outputs,
        api_name="finetune_selection",
        concurrency_id="finetune",
        concurrency_limit=1,
    )
