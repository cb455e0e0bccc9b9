"""Reporting long work and asking it to stop: the one progress protocol `progress(done, total, message)` (indexing,
classification, evaluation, fine-tuning), its terminal renderer (a tqdm bar on stderr), and the one stop flag
(`StopFlag`, checked with `stopped`) that fine-tuning and the background jobs share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tqdm import tqdm as Bar

ProgressFn = Callable[[int, int, str], None]  # (units done, units in total, what is being done)
# Set by the caller to ask work to stop at its next check: an Event, or a callable answering "stop now?".
StopFlag = Optional[threading.Event | Callable[[], bool]]


def stopped(stop: StopFlag) -> bool:
    """Has the caller asked to stop (an Event that is set, or a callable that returns True)?"""
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())


class TqdmProgress:
    """Adapts `progress(done, total, message)` to a tqdm bar; the message is the bar's description.

    A new phase (a new total, or a count that starts over) resets the bar. A message that changes while the count
    goes on does not: fine-tuning counts its whole plan once and says in the message which fold and epoch it is at,
    and a reset there would restart tqdm's rate and time left at every epoch."""

    def __init__(self, **tqdm_kwargs: Any):
        self._kwargs = tqdm_kwargs
        self._bar: Bar | None = None
        self._message: str | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        from tqdm.auto import tqdm  # imported on use: the core index does not need tqdm

        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(total=total, desc=message, **self._kwargs)
        elif total != bar.total or done < bar.n:
            bar.reset(total=total)
            bar.set_description(message)
        elif message != self._message:
            bar.set_description(message, refresh=False)
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


class TimeLeft:
    """The time left of a piece of work, said in its progress messages: "epoch 3/20 (about 40 s left)".

    Two guesses, blended by the share done: the expected total (`expect`, e.g. the fine-tune planner's estimate)
    minus the time spent, and the rate so far. Early on the rate misleads (encoding an image and training an
    epoch are both one unit), late the estimate does; without an estimate the rate alone, after a tenth is done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._started = clock()
        self._expected: Optional[float] = None

    def expect(self, seconds: float) -> None:
        self._expected = seconds

    def seconds_left(self, done: int, total: int) -> Optional[float]:
        elapsed = self._clock() - self._started
        share = min(1.0, done / total) if total > 0 else 0.0
        by_rate = elapsed * (1.0 - share) / share if share > 0 else None
        if self._expected is None:
            return by_rate if share >= 0.1 else None
        by_estimate = max(0.0, self._expected - elapsed)
        return by_estimate if by_rate is None else share * by_rate + (1.0 - share) * by_estimate

    def message(self, done: int, total: int, message: str) -> str:
        left = self.seconds_left(done, total)
        return message if left is None or done >= total else f"{message} (about {left:.0f} s left)"


def tqdm_progress(**tqdm_kwargs: Any) -> TqdmProgress:
    """A `progress` callable for the CLI: `with tqdm_progress(unit="img") as p: sync_folder(..., progress=p)`."""
    return TqdmProgress(**tqdm_kwargs)
