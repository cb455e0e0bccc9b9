"""clipapp.app.jobs: a long job stops when asked, when its follower closes the event stream, or when nobody follows
it."""

from __future__ import annotations

import threading

import pytest

from clipapp.app.jobs import Job, JobBoard
from clipapp.errors import ClipAppError


def _looping(started: threading.Event, steps: list):
    def work(should_stop, emit):
        started.set()
        while not should_stop():
            steps.append(1)
            emit("progress", len(steps), "working")
            threading.Event().wait(0.001)
        return "stopped"

    return work


def test_events_then_result():
    def work(should_stop, emit):
        emit("epoch", {"loss": [1.0]})
        return 42

    job = Job("j", work).start()
    events = [e for e in job.events(poll_s=0.01) if e is not None]
    assert [e.kind for e in events] == ["epoch"] and job.result == 42


def test_errors_reach_the_follower():
    def work(should_stop, emit):
        raise ClipAppError("bad data")

    with pytest.raises(ClipAppError, match="bad data"):
        list(Job("j", work).start().events(poll_s=0.01))


def test_closing_the_event_stream_stops_the_work():
    """What Gradio does to a cancelled event's generator."""
    started, steps = threading.Event(), []
    job = Job("j", _looping(started, steps)).start()
    events = job.events(poll_s=0.01)
    next(events)
    events.close()
    assert job.join(timeout=60) and job.result == "stopped"


def test_a_job_nobody_follows_stops():
    """A client that vanished: no one asks for the next event, so after `abandon_after_s` the work stops."""
    now = [0.0]
    started, steps = threading.Event(), []
    job = Job("j", _looping(started, steps), abandon_after_s=30, clock=lambda: now[0]).start()
    events = job.events(poll_s=0.01)
    next(events)
    assert started.wait(60) and not job.stopping
    now[0] = 31.0  # 31 s without a poll
    assert job.join(timeout=60) and job.stopping and job.result == "stopped"


def test_board_stops_by_key_and_forgets_finished_jobs():
    board = JobBoard()
    started, steps = threading.Event(), []
    job = board.start("session-a", Job("j", _looping(started, steps)))
    assert started.wait(60) and board.running() == [job]
    assert not board.stop("session-b") and board.stop("session-a")
    assert job.join(timeout=60) and board.running() == []
