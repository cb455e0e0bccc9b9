"""Progress on the terminal's stderr, the one place the CLI draws it: the tqdm bar of clipapp.progress for
`progress(done, total, message)` callbacks and a one-line percentage for fine-tuning's (fraction, message). Silent
when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from clipapp.progress import ProgressFn, tqdm_progress


@contextmanager
def bar(unit: str = "img", *, disable: bool = False) -> Iterator[ProgressFn]:
    """A `progress(done, total, message)` callback (clipapp.progress) drawing a tqdm bar while the block runs."""
    with tqdm_progress(unit=unit, file=sys.stderr, disable=disable or not sys.stderr.isatty(), dynamic_ncols=True) as p:
        yield p


@contextmanager
def fraction_line(*, quiet: bool = False) -> Iterator[Callable[[float, str], None]]:
    """A (fraction, message) callback rewriting one `[ 42.0%] message` line; the line is ended afterwards."""
    shown = not quiet and sys.stderr.isatty()

    def progress(fraction: float, message: str) -> None:
        if shown:
            print(f"\r[{fraction:5.1%}] {message:<60}", end="", file=sys.stderr, flush=True)

    try:
        yield progress
    finally:
        if shown:
            print(file=sys.stderr)
