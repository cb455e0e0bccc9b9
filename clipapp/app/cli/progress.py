"""Progress on the terminal's stderr, the one place the CLI draws it: the tqdm bar of clipapp.progress for every
command's `progress(done, total, message)` callback (indexing, classification, evaluation, fine-tuning). Silent when
disabled (`--json`, `--quiet`) or when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from clipapp.progress import ProgressFn, tqdm_progress


@contextmanager
def bar(unit: str = "img", *, disable: bool = False) -> Iterator[ProgressFn]:
    """A `progress(done, total, message)` callback (clipapp.progress) drawing a tqdm bar while the block runs."""
    with tqdm_progress(unit=unit, file=sys.stderr, disable=disable or not sys.stderr.isatty(), dynamic_ncols=True) as p:
        yield p
