"""Long jobs (fine-tuning) run in a thread of their own while a caller follows their events; no Gradio here.

A web request that starts a fine-tune must neither block the server's event loop nor leave the work running when
nobody waits for it any more. So the work runs in a thread and reports through a queue, and it stops (through the
stop check it is given, which `clipapp.finetune` polls between steps) when:
- `stop()` is called (the page's Stop button),
- the follower closes its event iterator (Gradio closes it when the event is cancelled), or
- the follower has not asked for the next event for `abandon_after_s` (a client that vanished without a word).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from clipapp.progress import StopFlag

log = logging.getLogger(__name__)

ABANDON_AFTER_S = 30.0  # a follower polls every fraction of a second; 30 s without a poll means it is gone

Emit = Callable[..., None]


@dataclass(frozen=True)
class JobEvent:
    kind: str  # "progress" (fraction, message), "epoch" (history) or any kind the work emits
    payload: tuple


class Job:
    """`work(should_stop, emit) -> result` in a daemon thread; follow it with `events()`."""

    def __init__(
        self,
        name: str,
        work: Callable[[StopFlag, Emit], Any],
        *,
        abandon_after_s: float = ABANDON_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self._work = work
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._clock = clock
        self._abandon_after_s = abandon_after_s
        self._last_seen = clock()
        self._thread = threading.Thread(target=self._run, name=f"job-{name}", daemon=True)
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.on_exit: Optional[Callable[["Job"], None]] = None  # called in the job's thread when the work ends

    def start(self) -> "Job":
        self._last_seen = self._clock()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        if not self._stop.is_set() and self._clock() - self._last_seen > self._abandon_after_s:
            log.info("Job %s: nobody has followed it for %.0f s; stopping it.", self.name, self._abandon_after_s)
            self._stop.set()
        return self._stop.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _emit(self, kind: str, *payload: Any) -> None:
        self._events.put(JobEvent(kind, payload))

    def _run(self) -> None:
        try:
            self.result = self._work(self.should_stop, self._emit)
        except BaseException as exc:  # noqa: BLE001 - handed to the follower, which reports it
            self.error = exc
        finally:
            if self.on_exit is not None:
                self.on_exit(self)
            self._events.put(None)  # the end

    def events(self, poll_s: float = 0.4) -> Iterator[Optional[JobEvent]]:
        """The job's events as they come, and None every `poll_s` without one (a chance to redraw or to be
        cancelled); ends when the work ends, raising its error if it failed. Closing this iterator early (or
        abandoning it) stops the work."""
        try:
            while True:
                self._last_seen = self._clock()
                try:
                    event = self._events.get(timeout=poll_s)
                except queue.Empty:
                    event = JobEvent("tick", ())
                if event is None:
                    break
                yield None if event.kind == "tick" else event
            if self.error is not None:
                raise self.error
        finally:
            if self._thread.is_alive():
                self.stop()


class JobBoard:
    """The running jobs, at most one per key (a browser session), so a Stop button can find the job it stops.
    A job leaves the board when its work ends: the board holds nothing for sessions that are idle."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, key: str, job: Job) -> Job:
        def leave(finished: Job) -> None:
            with self._lock:
                if self._jobs.get(key) is finished:
                    del self._jobs[key]

        job.on_exit = leave
        with self._lock:
            previous = self._jobs.get(key)
            if previous is not None:
                previous.stop()
            self._jobs[key] = job
        return job.start()

    def stop(self, key: str) -> bool:
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            return False
        job.stop()
        return True

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())
