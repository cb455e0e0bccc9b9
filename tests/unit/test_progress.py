"""clipapp.progress: the one progress protocol (done, total, message), its tqdm renderer, and the one stop flag."""

from __future__ import annotations

import threading

from clipapp.progress import stopped, tqdm_progress


def test_stopped_accepts_none_an_event_or_a_callable():
    event = threading.Event()
    assert not stopped(None) and not stopped(event) and not stopped(lambda: False)
    event.set()
    assert stopped(event) and stopped(lambda: True)


def test_the_tqdm_renderer_follows_done_total_and_resets_on_a_new_phase():
    with tqdm_progress(disable=True) as bar:
        bar(0, 10, "encoding")
        bar(4, 10, "encoding")
        assert bar._bar is not None and bar._bar.n == 4 and bar._bar.total == 10
        bar(1, 3, "building")
        assert bar._bar.n == 1 and bar._bar.total == 3
    assert bar._bar is None
