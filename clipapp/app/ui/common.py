"""What every tab shares: the app context and the translation of errors into messages in the page."""

from __future__ import annotations

import functools
import inspect
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Sequence, TypedDict

import gradio as gr
from gradio.data_classes import ListFiles
from pydantic import model_validator

from clipapp.app.jobs import JobBoard
from clipapp.app.sessions import DEFAULT_TTL_S, SessionStore
from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS
from clipapp.model.service import ClipService

log = logging.getLogger(__name__)

# Upload fields take every format the app reads (HEIC/HEIF and camera RAW too); the browser's "image" filter
# would hide those.
IMAGE_FILE_TYPES = sorted(IMAGE_EXTENSIONS)


class ListenerOptions(TypedDict, total=False):
    """Keyword options that several Gradio listeners share: `button.click(fn, inputs, outputs, **options)`.

    A TypedDict rather than a plain dict, so mypy checks each key against the listener's signature (a
    `dict[str, object]` unpacked into `click` matches none of its parameters). The value types are Gradio 6's.
    """

    concurrency_id: str | None
    concurrency_limit: int | None | Literal["default"]
    api_visibility: Literal["public", "private", "undocumented"]
    queue: bool
    show_progress: Literal["full", "minimal", "hidden"]


@dataclass
class AppContext:
    """Everything the tabs need, built once by app.py: one resident service for every session."""

    service: ClipService
    state_dir: Path  # server-side indexes and adapters live under here
    allowed_roots: tuple[Path, ...] = ()  # server folders the browser may index
    examples_dir: Path = Path(__file__).resolve().parents[3] / "assets" / "examples"
    # the Fine-tune tab's one-click labelled set; outside examples_dir so the Search tab's "examples" index is unchanged
    finetune_example_dir: Path = Path(__file__).resolve().parents[3] / "assets" / "finetune-example"
    session_ttl_s: float = DEFAULT_TTL_S  # --session-ttl: how long a session's uploads and adapters are kept
    # Model events that may run at once: enough for the service's micro-batcher to merge concurrent users' images
    # into shared forward passes (the forward passes themselves still run one at a time).
    model_concurrency: int = 16
    sessions: SessionStore = field(init=False, repr=False)
    jobs: JobBoard = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sessions = SessionStore(
            self.service, self.state_dir, self.examples_dir, self.allowed_roots, ttl_s=self.session_ttl_s
        )
        self.jobs = JobBoard()

    @property
    def is_demo_model(self) -> bool:
        from clipapp.model.spec import DEMO_SPEC

        return self.service.spec == DEMO_SPEC


@contextmanager
def _page_errors(name: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except ClipAppError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception:  # noqa: BLE001 - the page gets a message, the log gets the traceback
        log.exception("Unexpected error in %s", name)
        raise gr.Error("Something went wrong on the server; the error was logged.", print_exception=False) from None


def user_errors(fn: Callable) -> Callable:
    """Show `ClipAppError`s as a message in the page; log anything else and show a generic message, never a
    stack trace. The server keeps serving either way. Works for plain and generator (streaming) events."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with _page_errors(fn.__name__):
                yield from fn(*args, **kwargs)

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _page_errors(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


class _OneOrMoreFiles(ListFiles):
    """A list of files that also accepts one file given alone, as API callers naturally send it."""

    @model_validator(mode="before")
    @classmethod
    def _one_file_is_a_list(cls, value):
        return [value] if isinstance(value, dict) else value


def Files(**kwargs) -> gr.File:  # noqa: N802 - used like a component class
    """`gr.File(file_count="multiple")` that takes a single file where a list is expected. (A function, not a
    subclass: Gradio writes a .pyi stub next to every module that subclasses a component.)"""
    component = gr.File(file_count="multiple", **kwargs)
    component.data_model = _OneOrMoreFiles
    return component


def session_of(request: Optional[gr.Request]) -> str:
    return getattr(request, "session_hash", None) or ""


def uploaded_paths(files: Optional[Sequence]) -> list[str]:
    """gr.File(type='filepath') gives str paths (or objects with .name from older clients)."""
    if not files:
        return []
    if isinstance(files, (str, Path)):
        files = [files]
    return [str(getattr(f, "name", f)) for f in files]


def display_name(path: str) -> str:
    return Path(path).name
