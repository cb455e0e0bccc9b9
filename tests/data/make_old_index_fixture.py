"""Writes tests/data/old_index_v1/: indexes in the format of clipapp's index.py before SQLite (manifest +
generation files, format_version 1), as golden fixtures for the migration test. Run ONCE with that old code
(commit 5332f97); later code cannot write this format any more.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_old_index_fixture.py

* photos/: the 8 example photos (assets/examples/photos) synced with the bundled demo model: exact (flat) index,
  with one duplicate file (an alias) and one removed file, so ids have a gap.
* ivf/: 1,500 synthetic 16-d vectors with exact_threshold=1000, so the old code built and saved an IVF-Flat index.
expected.json holds query vectors and the hits today's code returned for them, so the test needs no model.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from clipapp.index import FileInfo, ImageIndex, sync_folder  # noqa: E402 - after the sys.path line above
from clipapp.model.service import ClipService  # noqa: E402

OUT = REPO / "tests" / "data" / "old_index_v1"


def hits_of(index: ImageIndex, queries: np.ndarray, k: int) -> list:
    return [
        [{"id": h["id"], "path": h["path"], "aliases": h["aliases"], "score": h["score"]} for h in hits]
        for hits in index.search(queries, k=k)
    ]


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    expected = {}

    service = ClipService.load("demo", device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        shutil.copytree(REPO / "assets" / "examples" / "photos", photos, ignore=shutil.ignore_patterns("*.md"))
        shutil.copy(photos / "cat.jpg", photos / "cat-copy.jpg")
        index = ImageIndex.create(OUT / "photos", service.spec, service.embed_dim)
        sync_folder(index, photos, service)
        (photos / "page.jpg").unlink()
        sync_folder(index, photos, service)
        queries = service.encode_texts(["a cat", "a rocket", "a cup of coffee"])
        expected["photos"] = {
            "queries": queries.tolist(),
            "k": 5,
            "hits": hits_of(index, queries, 5),
            "records": [vars(r) for r in index.records()],
            "count": len(index),
        }

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ImageIndex.create(OUT / "ivf", "fake-model", 16, exact_threshold=1000)
    index.add_items(vectors, [FileInfo(f"/photos/{i:07d}.jpg", 1000 + i, float(i), f"{i:064x}") for i in range(1500)])
    index.remove_paths(["/photos/0000010.jpg"])
    index.save()
    queries = rng.standard_normal((8, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected["ivf"] = {
        "queries": queries.tolist(),
        "k": 10,
        "hits": hits_of(index, queries, 10),
        "structure": vars(index.structure),
        "count": len(index),
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1))
    for lock in OUT.glob("*/.lock"):
        lock.unlink()


if __name__ == "__main__":
    main()
