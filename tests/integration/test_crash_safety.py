"""kill -9 the real app while it indexes and saves; the restarted app serves the previous, intact index.

The real `python app.py` process (tests/support/apprunner.py), since a signal that kills the process is the point."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from clipapp.index import DB_NAME, ImageIndex
from tests.support.apprunner import running_app


def _write_images(folder: Path, start: int, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"img_{i:05d}.png")


def _committed_paths(index_dir: Path) -> int:
    """Paths committed to the index database, read by another connection (what survives a kill)."""
    try:
        with sqlite3.connect(f"file:{index_dir / DB_NAME}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM paths").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.server
@pytest.mark.slow
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
        # Kill mid-sync, as soon as a batch beyond the first build has been committed (or after 60 s at most).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _committed_paths(index_dir) <= 40:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        committed = _committed_paths(index_dir)

    survived = ImageIndex.open(index_dir, expected_spec=tiny_spec)
    assert len(survived) == committed and committed > 40  # every committed batch is there, nothing damaged
    survived.close()
    with running_app(args) as (_, url):
        client = Client(url, verbose=False)
        result = client.predict(str(photos), "a photo", "simple", 5, -1, api_name="/search_text")
        assert len(result["results"]) == 5
        report = client.predict(str(photos), [], api_name="/index_images")
        assert report["total"] == 1540  # the restarted app finishes the job incrementally


SAVER = r"""
import sys, numpy as np
from clipapp.finetune.adapter import Adapter
path, generation = sys.argv[1], 0
while True:
    generation += 1
    rng = np.random.default_rng(generation)
    n_classes = 2 + generation % 3  # generations differ in shape too: a mix could not load
    adapter = Adapter(name=f"gen{generation}", class_names=[f"c{i}" for i in range(n_classes)], spec="tiny",
                      head=rng.normal(size=(n_classes, 32)), logit_scale=10.0, mode="cache",
                      cache_keys=rng.normal(size=(150_000, 32)).astype(np.float32),
                      cache_values=np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, 150_000)],
                      cache_alpha=1.0, cache_beta=5.0)
    print("saving", generation, flush=True)
    adapter.save(path)
"""


@pytest.mark.slow
def test_kill_during_adapter_saves_leaves_a_whole_adapter(tmp_path):
    import subprocess
    import sys

    from clipapp.finetune.adapter import load_adapter
    from tests.support.paths import REPO_DIR

    path = tmp_path / "adapters" / "mine"
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    rng = np.random.default_rng(0)
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(1 + attempt % 3):
            proc.stdout.readline()  # a save has started
        time.sleep(float(rng.uniform(0, 0.4)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if not path.with_suffix(".json").exists() and not (path.parent / "mine.json").exists():
            continue  # killed before the very first save completed: nothing to check yet
        adapter = load_adapter(path)
        generation = int(adapter.name.removeprefix("gen"))
        n_classes = 2 + generation % 3
        expected = np.random.default_rng(generation).normal(size=(n_classes, 32))
        np.testing.assert_allclose(adapter.head, expected, atol=1e-6)  # tensors and JSON of one generation
        assert adapter.cache_keys.shape == (150_000, 32)
