"""What every tab shares: the app context and the translation of errors into messages in the page."""

from __future__ import annotations

import functools
import inspect
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import gradio as gr

from clipapp.errors import ClipAppError
from clipapp.service import ClipService

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """Everything the tabs need, built once by app.py: one resident service for every session."""

    service: ClipService
    state_dir: Path  # server-side indexes and adapters live under here
    allowed_roots: tuple[Path, ...] = ()  # server folders the browser may index
    examples_dir: Path = Path(__file__).resolve().parents[2] / "assets" / "examples"
    extras: dict = field(default_factory=dict)


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


def uploaded_paths(files: Optional[Sequence]) -> list[str]:
    """gr.File(type='filepath') gives str paths (or objects with .name from older clients)."""
    if not files:
        return []
    if isinstance(files, (str, Path)):
        files = [files]
    return [str(getattr(f, "name", f)) for f in files]


def display_name(path: str) -> str:
    return Path(path).name
