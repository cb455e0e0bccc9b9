"""clipapp.progress: the one progress protocol (done, total, message), its tqdm renderer, and the one stop flag."""

from __future__ import annotations

import io
import threading

import pytest

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


def test_the_tqdm_renderer_keeps_counting_when_only_the_message_changes():
    """Fine-tuning counts its whole plan once and names the fold and epoch in the message: no reset (which would
    restart tqdm's rate and time left) until a new total or a count that starts over."""
    with tqdm_progress(file=io.StringIO()) as bar:
        bar(3, 20, "fold 1/2: epoch 1/3")
        started = bar._bar.start_t
        bar(4, 20, "fold 1/2: epoch 2/3")
        assert (bar._bar.n, bar._bar.total) == (4, 20) and bar._bar.desc.startswith("fold 1/2: epoch 2/3")
        assert bar._bar.start_t == started
        bar(1, 20, "building")  # the count starts over: a new phase
        assert bar._bar.n == 1 and bar._bar.desc.startswith("building")


def test_fine_tunings_old_progress_type_answers_for_one_release():
    """`clipapp.finetune.config.ProgressFn` (fraction, message) gave way to the one protocol's type."""
    import clipapp.finetune as package
    import clipapp.progress
    from clipapp.finetune import config

    for module in (config, package, package):  # the package warns on every lookup, not just the first
        with pytest.warns(DeprecationWarning, match="ProgressFn moved to clipapp.progress.ProgressFn"):
            assert module.ProgressFn is clipapp.progress.ProgressFn


def test_time_left_follows_the_estimate_early_and_the_rate_late():
    from clipapp.progress import TimeLeft

    now = [0.0]
    left = TimeLeft(clock=lambda: now[0])
    assert left.message(0, 10, "encoding") == "encoding"  # nothing known yet: no guess
    left.expect(100.0)
    now[0] = 10.0
    assert left.seconds_left(0, 10) == 90.0  # the estimate minus the time spent
    now[0] = 80.0  # 9 of 10 done in 80 s: the rate says 8.9 s more, the estimate 20
    assert abs(left.seconds_left(9, 10) - (0.9 * 80 / 9 + 0.1 * 20)) < 1e-9
    assert left.message(9, 10, "epoch 9/10") == "epoch 9/10 (about 10 s left)"
    assert left.message(10, 10, "done") == "done"
    rate_only = TimeLeft(clock=lambda: now[0])
    now[0] += 20.0
    assert rate_only.seconds_left(1, 20) is None and rate_only.seconds_left(5, 20) == 60.0
