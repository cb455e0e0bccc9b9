"""How the running app shares the machine: users' model events share forward passes, heavy jobs never hold the
interactive slots, a cancelled fine-tune stops, /health answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import Status

from clipapp.app.ui.common import AppContext
from clipapp.model.service import ClipService
from tests.support.paths import EXAMPLES_DIR
from tests.support.serving import serving

USERS = 6


pytestmark = pytest.mark.server  # every test here starts the server (tests.support.serving)


@pytest.fixture
def ctx(tiny_service, tmp_path):
    # A service of its own (the tiny model's weights shared), so its micro-batcher counts only this test's calls.
    return AppContext(
        service=ClipService(tiny_service.loaded), state_dir=tmp_path / "state", allowed_roots=(EXAMPLES_DIR,)
    )


def test_concurrent_users_share_forward_passes(ctx, photos):
    """The first forward pass waits until the other users' images are queued behind it: possible only when the
    app runs model events from different users at the same time. Then they all go in one second pass."""
    batcher = ctx.service._image_batcher
    forward = batcher._fn
    all_queued = threading.Event()

    def first_waits(pixels):
        if batcher.batches_run == 0:
            for _ in range(600):  # until the others are queued (a timeout, so a failure fails instead of hanging)
                if batcher._queue.qsize() + len(pixels) >= USERS:  # two may already share this first pass
                    all_queued.set()
                    break
                threading.Event().wait(0.1)
        return forward(pixels)

    batcher._fn = first_waits
    with serving(ctx) as url:
        clients = [Client(url, verbose=False) for _ in range(USERS)]
        with ThreadPoolExecutor(USERS) as pool:
            results = list(
                pool.map(lambda c: c.predict(handle_file(str(photos[0])), "cat, dog", api_name="/classify"), clients)
            )
    assert all(len(r["results"]) == 1 for r in results)
    assert all_queued.is_set()
    assert (batcher.batches_run, batcher.rows_run) == (2, USERS)


def test_a_heavy_job_never_holds_the_interactive_slots(ctx, photos):
    """While an indexing job runs (held here until the end), classify and search still answer."""
    release, entered = threading.Event(), threading.Event()
    update = ctx.sessions.update

    def slow_update(*args, **kwargs):
        entered.set()
        release.wait(600)
        return update(*args, **kwargs)

    ctx.sessions.update = slow_update
    with serving(ctx) as url:
        indexer, user = Client(url, verbose=False), Client(url, verbose=False)
        job = indexer.submit("examples", api_name="/index_images")
        assert entered.wait(120)
        try:
            result = user.predict(handle_file(str(photos[0])), "cat, dog", api_name="/classify")
            hits = user.predict("examples", "a cat", api_name="/search_text")
            assert len(result["results"]) == 1 and len(hits["results"]) > 0
            assert not job.done()
        finally:
            release.set()
        assert job.result()["total"] > 0


def test_a_cancelled_finetune_stops_its_work(ctx, tmp_path, photos, monkeypatch):
    import zipfile

    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, photo in enumerate(photos[:8]):
            zf.write(photo, f"{'odd' if i % 2 else 'even'}/{photo.name}")
    started = threading.Event()
    import clipapp.finetune
    from clipapp.errors import ClipAppError

    seen_stop = []
    test_over = threading.Event()  # a failed cancel must not leave the work running and the test process alive

    def endless_finetune(service, data, config, *, stop, progress, **kwargs):
        started.set()
        while not stop() and not test_over.is_set():
            progress(1, 2, "training")
            threading.Event().wait(0.05)
        seen_stop.append(not test_over.is_set())
        raise ClipAppError("stopped")

    # runs until it is told to stop (actions.finetune_for_session calls clipapp.finetune.finetune)
    monkeypatch.setattr(clipapp.finetune, "finetune", endless_finetune)
    try:
        with serving(ctx) as url:
            client = Client(url, verbose=False)
            job = client.submit(handle_file(str(archive)), api_name="/finetune")
            assert started.wait(120)
            running = ctx.jobs.running()
            assert len(running) == 1
            # cancel once the client has the event's first output: before that, gradio_client may cancel only its own
            # side and the server's work runs on (CI under load once waited 120 s for a stop that was never sent)
            deadline = time.monotonic() + 120
            while job.status().code != Status.ITERATING and time.monotonic() < deadline:
                time.sleep(0.05)
            job.cancel()
            assert running[0].join(timeout=120)  # a liveness bound, generous: the work polls its stop every 50 ms
            assert seen_stop == [True] and ctx.jobs.running() == []
    finally:
        test_over.set()


def test_health_route(ctx):
    with serving(ctx) as url:
        with urllib.request.urlopen(url + "health") as response:
            health = json.loads(response.read())
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert health["model"] == ctx.service.spec and health["queue_length"] == 0


def test_the_page_says_how_long_uploads_are_kept(tiny_service, tmp_path):
    ctx = AppContext(service=tiny_service, state_dir=tmp_path, session_ttl_s=12 * 3600)
    with serving(ctx) as url:
        with urllib.request.urlopen(url + "config") as response:
            config = response.read().decode()
    assert "kept on the server for 12 hours after its last use" in config
