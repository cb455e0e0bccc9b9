"""Progress on the terminal's stderr, the one place the CLI draws it: a tqdm bar for (done, total) callbacks and a
one-line percentage for fine-tuning's (fraction, message). Silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def count_bar(unit: str = "img", *, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A (done, total[, message]) callback drawing a tqdm bar while the block runs."""
    from tqdm.auto import tqdm

    bar = tqdm(total=0, unit=unit, file=sys.stderr, disable=disable or not sys.stderr.isatty(), dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        if message:
            bar.set_description(message, refresh=False)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


@contextmanager
def sync_bar(*, disable: bool = False) -> Iterator:
    """The index's own progress callback (`clipapp.index.tqdm_progress`) while a folder syncs."""
    from clipapp.index import tqdm_progress

    with tqdm_progress(disable=disable or not sys.stderr.isatty(), unit="img") as progress:
        yield progress


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
