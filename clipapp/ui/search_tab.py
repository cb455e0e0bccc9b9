"""The Search tab: build or open an index (examples, allowed server folders, or the session's uploads), then
search it by text, by an uploaded image, or by clicking a result."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Optional

import gradio as gr

from clipapp import tasks
from clipapp.data import IMAGE_EXTENSIONS, load_image
from clipapp.errors import ClipAppError
from clipapp.index import ImageIndex
from clipapp.storage import file_sha256
from clipapp.prompts import DEFAULT_TEMPLATES
from clipapp.ui.common import AppContext, display_name, uploaded_paths, user_errors
from clipapp.ui.zero_shot_tab import TEMPLATE_CHOICES

EXAMPLES = "examples"
MY_UPLOADS = "my uploads"
MAX_UPLOADS_PER_CALL = 500


class IndexRegistry:
    """The indexes this server has open, each used under its own lock. Server folders are shared by everyone
    (the operator allowed them); each browser session's uploads go to an index of its own."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self._open: dict[Path, ImageIndex] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()
        self._model_tag = hashlib.sha1(ctx.service.spec.encode()).hexdigest()[:10]

    def sources(self) -> list[str]:
        return [EXAMPLES, *(str(root) for root in self.ctx.allowed_roots), MY_UPLOADS]

    def session_dir(self, session: str) -> Path:
        if not session or not session.replace("-", "").replace("_", "").isalnum():
            raise ClipAppError("No browser session: reload the page.")
        return self.ctx.state_dir / "sessions" / session

    def folder_and_index_path(self, source: str, session: str) -> tuple[Path, Path]:
        """Resolve a source name to (image folder, index folder); only the listed sources are accepted."""
        if source == EXAMPLES:
            return self.ctx.examples_dir, self.ctx.state_dir / "indexes" / f"examples-{self._model_tag}"
        if source == MY_UPLOADS:
            base = self.session_dir(session)
            return base / "images", base / f"index-{self._model_tag}"
        for root in self.ctx.allowed_roots:
            if source == str(root):
                digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
                return root, self.ctx.state_dir / "indexes" / f"{root.name or 'root'}-{digest}-{self._model_tag}"
        raise ClipAppError(f"{source!r} is not an index this server offers: choose one of {', '.join(self.sources())}. "
                           "Server folders must be allowed with --allowed-root.")

    def locked(self, index_path: Path) -> tuple[ImageIndex, threading.Lock]:
        with self._guard:
            lock = self._locks.setdefault(index_path, threading.Lock())
            if index_path not in self._open:
                self._open[index_path] = ImageIndex.open_or_create(index_path, self.ctx.service.spec,
                                                                   self.ctx.service.embed_dim)
            return self._open[index_path], lock

    def update(self, source: str, session: str, progress=None) -> dict:
        folder, index_path = self.folder_and_index_path(source, session)
        folder.mkdir(parents=True, exist_ok=True)
        index, lock = self.locked(index_path)
        with lock:
            return tasks.sync_index(self.ctx.service, index, folder, progress=progress)

    def searchable(self, source: str, session: str) -> tuple[ImageIndex, threading.Lock]:
        """The index for `source`, built on first use so every source works without a manual build."""
        _, index_path = self.folder_and_index_path(source, session)
        index, lock = self.locked(index_path)
        if len(index) == 0:
            self.update(source, session)
        return index, lock

    def store_uploads(self, session: str, files: list[str]) -> list[str]:
        """Copy valid uploaded images into the session's folder; returns problems for the ones refused."""
        if len(files) > MAX_UPLOADS_PER_CALL:
            raise ClipAppError(f"{len(files)} files uploaded; at most {MAX_UPLOADS_PER_CALL} per call.")
        target = self.session_dir(session) / "images"
        target.mkdir(parents=True, exist_ok=True)
        problems = []
        for path in files:
            source = Path(path)
            try:
                load_image(source)  # validate before keeping anything
            except ClipAppError as exc:
                problems.append(str(exc))
                continue
            suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_EXTENSIONS else ".png"
            name = f"{Path(display_name(path)).stem[:80]}-{file_sha256(str(source))[:8]}{suffix}"
            shutil.copyfile(source, target / name)
        return problems


def _page_result(result: dict) -> tuple[dict, list[tuple[str, str]]]:
    """(JSON, gallery) for the page and the API. The JSON names each hit's file "image", not "path":
    gradio_client takes any {"path": ...} dict for a file to download and would drop the score."""
    hits = [{"image": hit["path"], "score": hit["score"]} for hit in result["results"]]
    gallery = [(hit["image"], f"{hit['score']:.3f}  {display_name(hit['image'])}") for hit in hits]
    return {"results": hits}, gallery


def _threshold(value) -> Optional[float]:
    return None if value is None or float(value) <= -1 else float(value)


def build_tab(ctx: AppContext) -> IndexRegistry:
    registry = IndexRegistry(ctx)
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Dropdown(registry.sources(), value=EXAMPLES, label="Index",
                                 info="the built-in examples, a server folder allowed with --allowed-root, or your uploads")
            uploads = gr.File(label="Add images to 'my uploads'", file_count="multiple", file_types=["image"],
                              type="filepath")
            build_button = gr.Button("Build / update index")
            status = gr.JSON(label="Index report")
        with gr.Column(scale=2):
            with gr.Row():
                query = gr.Textbox(label="Text query", placeholder="a cat   or   dog + snow - grass", scale=3)
                search_button = gr.Button("Search", variant="primary", scale=1)
            with gr.Row():
                templates = gr.Dropdown(TEMPLATE_CHOICES, value=DEFAULT_TEMPLATES, label="Prompt templates")
                k = gr.Slider(1, 100, value=12, step=1, label="Results (k)")
                threshold = gr.Slider(-1, 1, value=-1, step=0.01, label="Min score (-1 = none)")
            with gr.Row():
                query_image = gr.File(label="Search by image", file_types=["image"], type="filepath", scale=3)
                image_button = gr.Button("Search by image", scale=1)
            gallery = gr.Gallery(label="Results (click one to search by it)", columns=6, height=520,
                                 allow_preview=False)
            results = gr.JSON(label="Results", visible=False)

    def index_images(source_, files_, request: gr.Request, progress=gr.Progress()):
        session = request.session_hash if request else ""
        files = uploaded_paths(files_)
        problems = []
        if files:
            if source_ != MY_UPLOADS:
                raise ClipAppError("Uploaded images go to the 'my uploads' index: choose it first.")
            problems = registry.store_uploads(session, files)

        def report(done: int, total: int, message: str) -> None:
            progress(done / max(total, 1), desc=message)

        result = registry.update(source_, session, progress=report)
        if problems:
            result["refused_uploads"] = problems
        return result

    def by_text(source_, query_, templates_, k_, threshold_, request: gr.Request):
        index, lock = registry.searchable(source_, request.session_hash if request else "")
        with lock:
            # Image terms in a typed query would make the server read its own files: text only here.
            result = tasks.search_text(ctx.service, index, query_, k=int(k_), threshold=_threshold(threshold_),
                                       templates=templates_, allow_image_paths=False)
        return _page_result(result)

    def by_image(source_, image_, k_, threshold_, request: gr.Request):
        paths = uploaded_paths(image_)
        if not paths:
            raise ClipAppError("Upload an image to search by.")
        index, lock = registry.searchable(source_, request.session_hash if request else "")
        with lock:
            result = tasks.search_image(ctx.service, index, paths[0], k=int(k_), threshold=_threshold(threshold_))
        return _page_result(result)

    def by_click(source_, current, k_, threshold_, evt: gr.SelectData, request: gr.Request):
        hits = (current or {}).get("results", [])
        if evt.index is None or evt.index >= len(hits):
            raise ClipAppError("Click a search result to search by it.")
        index, lock = registry.searchable(source_, request.session_hash if request else "")
        with lock:
            vector = index.vector_for_path(hits[evt.index]["image"])
            if vector is None:
                raise ClipAppError("That image is no longer in the index; search again.")
            result = tasks.search_vector(index, vector, k=int(k_), threshold=_threshold(threshold_))
        return _page_result(result)

    build_button.click(user_errors(index_images), [source, uploads], status, api_name="index_images",
                       concurrency_id="index", concurrency_limit=1)
    text_inputs = [source, query, templates, k, threshold]
    search_button.click(user_errors(by_text), text_inputs, [results, gallery], api_name="search_text",
                        concurrency_id="model")
    query.submit(user_errors(by_text), text_inputs, [results, gallery], api_visibility="private",
                 concurrency_id="model")
    image_button.click(user_errors(by_image), [source, query_image, k, threshold], [results, gallery],
                       api_name="search_image", concurrency_id="model")
    gallery.select(user_errors(by_click), [source, results, k, threshold], [results, gallery],
                   api_visibility="private", concurrency_id="model")
    return registry
