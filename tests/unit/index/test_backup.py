"""clipapp.index backup: a consistent copy while another process keeps committing, which opens and searches the
same; the search cache travels with it; a used destination is refused."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.index import DB_NAME, VECTORS_NAME, FileInfo, ImageIndex, structure
from clipapp.index.backup import backup_index
from tests.support.fake_index import SPEC, infos_for, random_unit

REPO_DIR = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}
D, BATCH = 32, 3000

WRITER = """
    import sys
    import numpy as np
    from clipapp.index import FileInfo, ImageIndex

    def vectors_for(ids):  # deterministic per id, so a backup can be checked row by row
        x = np.sin(np.outer(ids + 1.0, np.arange(1, 33))).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    index = ImageIndex.open(sys.argv[1])
    batch = int(sys.argv[2])
    while len(index) < 60_000:
        ids = np.arange(len(index), len(index) + batch)
        index.add_items(vectors_for(ids), [FileInfo(f"/img/{i:07d}.jpg", int(i), float(i), f"{i:064x}") for i in ids])
        index.save()
        print("saved", len(index), flush=True)
"""


def _vectors_for(ids: np.ndarray) -> np.ndarray:
    x = np.sin(np.outer(ids + 1.0, np.arange(1, 33))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_whole_commit(folder: Path) -> int:
    assert sqlite3.connect(folder / DB_NAME).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    index = ImageIndex.open(folder)
    n = len(index)
    assert n % BATCH == 0 and n >= BATCH  # whole commits only
    assert os.path.getsize(folder / VECTORS_NAME) == n * D * 4  # the rows of the snapshot, none of later commits
    np.testing.assert_array_equal(index.ids(), np.arange(n))
    np.testing.assert_allclose(index.vectors(), _vectors_for(np.arange(n)), atol=1e-6)
    probes = np.array([0, n // 2, n - 1])
    assert [r.hits[0].path for r in index.search(_vectors_for(probes), k=1)] == [f"/img/{i:07d}.jpg" for i in probes]
    index.close()
    return n


def test_backup_while_another_process_syncs_is_a_whole_commit_that_searches(tmp_path):
    folder = tmp_path / "idx"
    ImageIndex.create(folder, SPEC, D, exact_threshold=10**9).close()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(folder), str(BATCH)],
        cwd=REPO_DIR,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    counts, during = [], 0
    try:
        assert child.stdout.readline().startswith("saved"), child.stderr.read()
        for attempt in range(4):
            backup_index(folder, tmp_path / f"backup{attempt}")
            during += child.poll() is None  # the writer was still committing when the copy ended
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    finally:
        child.kill()
    counts = [_assert_whole_commit(tmp_path / f"backup{attempt}") for attempt in range(4)]
    assert during >= 1 and counts == sorted(counts) and counts[0] < 60_000
    assert len(ImageIndex.open(folder)) == 60_000


def test_backup_of_a_compacted_index_searches_the_same_with_its_cache(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    vectors = random_unit(3000, 16, seed=2)
    index = ImageIndex.create(folder, SPEC, 16, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(3000)))
    index.add_alias(FileInfo("/copies/a.jpg", 1, 1.0, f"{5:064x}"))
    index.set_tags({"/photos/0000005.jpg": [("cat", 0.8)]})
    index.save()
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in range(100, 1100)])
    index.save()
    index.compact()
    queries = random_unit(10, 16, seed=4)
    expected = [[(h.path, h.score, h.aliases) for h in r.hits] for r in index.search(queries, k=5)]
    report = backup_index(folder, tmp_path / "copy")
    assert report.images == 2000 and report.paths == 2001 and report.dest == str(tmp_path / "copy")
    monkeypatch.setattr(structure, "build", lambda *a, **k: pytest.fail("the cache should have been copied"))
    copy = ImageIndex.open(tmp_path / "copy")
    assert [[(h.path, h.score, h.aliases) for h in r.hits] for r in copy.search(queries, k=5)] == expected
    assert copy.tags("/copies/a.jpg") == [("cat", 0.8)] and copy.spec == SPEC
    assert report.bytes == sum(p.stat().st_size for p in (tmp_path / "copy").iterdir())


def test_backup_refuses_a_used_destination_and_leaves_no_temporary_folder(tmp_path):
    folder = tmp_path / "idx"
    ImageIndex.create(folder, SPEC, 16).close()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    with pytest.raises(ClipAppError, match="not an empty folder"):
        backup_index(folder, tmp_path / "used")
    with pytest.raises(ClipAppError, match="No index at"):
        backup_index(tmp_path / "nothing", tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "used"]
    backup_index(folder, tmp_path / "empty-ok")
    assert ImageIndex.open(tmp_path / "empty-ok").spec == SPEC
