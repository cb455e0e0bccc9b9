"""kill -9 the real app while it indexes and saves; the restarted app serves the previous, intact index."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
from gradio_client import Client
from PIL import Image

from clipapp.index import ImageIndex
from tests.apprunner import running_app


def _write_images(folder: Path, start: int, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"img_{i:05d}.png")


def test_kill_during_indexing_leaves_a_loadable_index(tiny_spec, tmp_path):
    photos, state = tmp_path / "photos", tmp_path / "state"
    _write_images(photos, 0, 40)
    args = ["--model", tiny_spec, "--allowed-root", str(photos), "--state-dir", str(state)]
    with running_app(args) as (proc, url):
        first = Client(url, verbose=False).predict(str(photos), [], api_name="/index_images")
        assert first["added"] == 40
        index_dir = next((state / "indexes").glob("photos-*"))
        _write_images(photos, 40, 1500)
        Client(url, verbose=False).submit(str(photos), [], api_name="/index_images")
        # Kill at the first sign of a save in progress (a temporary file), or mid-run at the latest.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(index_dir.glob(".*.tmp")):
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    survived = ImageIndex.open(index_dir, expected_spec=tiny_spec)
    assert len(survived) >= 40  # the first build, or a later checkpoint: never less, never damaged
    with running_app(args) as (_, url):
        client = Client(url, verbose=False)
        result, _ = client.predict(str(photos), "a photo", "simple", 5, -1, api_name="/search_text")
        assert len(result["results"]) == 5
        report = client.predict(str(photos), [], api_name="/index_images")
        assert report["total"] == 1540  # the restarted app finishes the job incrementally
