"""Progress callbacks `progress(done, total, message)` and their tqdm adapter for the CLI (stderr)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm as Bar

ProgressFn = Callable[[int, int, str], None]


class TqdmProgress:
    """Adapts `progress(done, total, message)` to a tqdm bar (a new phase, i.e. a new message, resets it)."""

    def __init__(self, **tqdm_kwargs: Any):
        self._kwargs = tqdm_kwargs
        self._bar: Bar | None = None
        self._message: str | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        from tqdm.auto import tqdm  # imported on use: the core index does not need tqdm

        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(total=total, desc=message, **self._kwargs)
        elif message != self._message or total != bar.total:
            bar.reset(total=total)
            bar.set_description(message)
        self._message = message
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tqdm_progress(**tqdm_kwargs: Any) -> TqdmProgress:
    """A `progress` callable for the CLI: `with tqdm_progress(unit="img") as p: sync_folder(..., progress=p)`."""
    return TqdmProgress(**tqdm_kwargs)
