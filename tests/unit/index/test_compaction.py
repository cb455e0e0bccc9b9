"""clipapp.index compaction: the vector file loses its dead rows, every path keeps its vector, tags and aliases, the
search structure follows without retraining, another open index follows, and a real process killed at any point
of a compaction leaves the index as before or as after."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.index import DB_NAME, VECTORS_NAME, FileInfo, ImageIndex, structure
from clipapp.index.filters import SearchFilter
from clipapp.index.store import Store
from tests.support.fake_index import SPEC, infos_for, random_unit

REPO_DIR = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}
D = 16


def _no_rebuild(*args, **kwargs):
    raise AssertionError("the search structure was rebuilt; compaction should renumber it in place")


def _churned(folder: Path, n: int, *, exact_threshold: int) -> tuple[ImageIndex, np.ndarray, list[int]]:
    """n images, an alias, tags; then 30% removed. Returns the index, all vectors and the kept ids."""
    vectors = random_unit(n, D, seed=5)
    index = ImageIndex.create(folder, SPEC, D, exact_threshold=exact_threshold)
    index.add_items(vectors, infos_for(range(n)))
    index.add_alias(FileInfo("/copies/0000009.jpg", 1, 1.0, f"{9:064x}"))
    index.set_tags({f"/photos/{i:07d}.jpg": [("even", 0.9)] for i in range(0, n, 2)})
    index.save()
    rng = np.random.default_rng(3)
    removed = sorted(rng.choice(np.arange(10, n), size=int(0.3 * n), replace=False).tolist())
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in removed])
    index.save()
    return index, vectors, sorted(set(range(n)) - set(removed))


def _answers(index: ImageIndex, queries: np.ndarray, **kwargs) -> list[list[tuple[str, float]]]:
    return [[(hit.path, round(hit.score, 5)) for hit in result.hits] for result in index.search(queries, k=5, **kwargs)]


@pytest.mark.parametrize("kind,n,exact_threshold", [("flat", 600, 10_000), ("ivf", 3000, 1000)])
def test_compaction_drops_dead_rows_and_keeps_every_answer(tmp_path, monkeypatch, kind, n, exact_threshold):
    folder = tmp_path / "idx"
    index, vectors, kept = _churned(folder, n, exact_threshold=exact_threshold)
    assert index.index_type == kind
    queries = random_unit(20, D, seed=9)
    before = _answers(index, queries)
    tagged_before = _answers(index, queries, tag="even")
    assert (folder / VECTORS_NAME).stat().st_size == n * D * 4

    monkeypatch.setattr(structure, "build", _no_rebuild)  # the structure follows: ids renumbered, not retrained
    report = index.compact()
    assert report.to_dict() | {"seconds": 0} == {
        "images": len(kept),
        "dead_rows": n - len(kept),
        "bytes_before": n * D * 4,
        "bytes_after": len(kept) * D * 4,
        "seconds": 0,
    }
    assert (folder / VECTORS_NAME).stat().st_size == len(kept) * D * 4
    np.testing.assert_array_equal(index.ids(), np.arange(len(kept)))
    assert _answers(index, queries) == before and _answers(index, queries, tag="even") == tagged_before
    for i in kept[::37]:  # each path keeps its own vector, tags and aliases
        np.testing.assert_allclose(index.vector_for_path(f"/photos/{i:07d}.jpg"), vectors[i], atol=1e-6)
    even, odd = (next(i for i in kept[10:] if i % 2 == parity) for parity in (0, 1))
    assert index.tags(f"/photos/{even:07d}.jpg") == [("even", 0.9)] and index.tags(f"/photos/{odd:07d}.jpg") == []
    copies = index.search(vectors[9], k=1)[0].hits[0]
    assert (copies.path, copies.aliases) == ("/photos/0000009.jpg", ("/copies/0000009.jpg",))
    assert index.record("/copies/0000009.jpg").id == index.record("/photos/0000009.jpg").id
    assert [p.name for p in folder.iterdir() if ".compact-" in p.name] == []

    index.close()
    reopened = ImageIndex.open(folder)  # the saved cache was renumbered too: loaded, not rebuilt
    assert _answers(reopened, queries) == before
    new = reopened.add_items(random_unit(1, D, seed=99), infos_for([10**6]))  # ids go on after the live rows
    reopened.save()
    assert new == [len(kept)] and reopened.search(random_unit(1, D, seed=99), k=1)[0].hits[0].id == len(kept)
    assert sqlite3.connect(folder / DB_NAME).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_index_open_elsewhere_follows_a_compaction(tmp_path):
    folder = tmp_path / "idx"
    index, _, _ = _churned(folder, 3000, exact_threshold=1000)
    queries = random_unit(20, D, seed=9)
    before = _answers(index, queries)
    served = ImageIndex.open(folder)  # another connection, as the app holding the index
    assert _answers(served, queries) == before
    index.compact()
    assert _answers(served, queries) == before  # reopened the new file, reloaded the renumbered structure
    served.add_items(random_unit(1, D, seed=77), infos_for([10**6]))
    served.save()
    assert index.search(random_unit(1, D, seed=77), k=1)[0].hits[0].path == f"/photos/{10**6:07d}.jpg"


def _self_hits(index: ImageIndex, vectors: np.ndarray, kept: list[int], **kwargs) -> list[tuple[str, str]]:
    """(expected, got) top-hit paths of each kept image searched with its own vector, where they differ."""
    results = index.search(vectors[kept], k=3, **kwargs)
    got = [result.hits[0].path if result.hits else None for result in results]
    return [(f"/photos/{i:07d}.jpg", g) for i, g in zip(kept, got, strict=True) if g != f"/photos/{i:07d}.jpg"]


@pytest.mark.parametrize("kind,n,exact_threshold", [("flat", 600, 10_000), ("ivf", 3000, 1000)])
@pytest.mark.parametrize("filtered", [False, True])
def test_a_compaction_committing_mid_search_elsewhere_never_mixes_ids(
    tmp_path, monkeypatch, kind, n, exact_threshold, filtered
):
    """Issue 22: the search ran on the old ids, the path lookup after it must not read the renumbered ones."""
    folder = tmp_path / "idx"
    writer, vectors, kept = _churned(folder, n, exact_threshold=exact_threshold)
    served = ImageIndex.open(folder)  # another connection, as the app holding the index
    assert served.index_type == kind
    kwargs = {"filter": SearchFilter(under="/photos/")} if filtered else {}
    assert _self_hits(served, vectors, kept, **kwargs) == []
    name = "_search_filtered" if filtered else "_search_ids"
    original, compactions = getattr(ImageIndex, name), []

    def search_then_compact(self, *args):
        found = original(self, *args)
        if self is served and not compactions:  # the other process commits between the search and the lookup
            compactions.append(writer.compact())
        return found

    monkeypatch.setattr(ImageIndex, name, search_then_compact)
    assert _self_hits(served, vectors, kept, **kwargs) == []
    assert len(compactions) == 1 and compactions[0].dead_rows == n - len(kept)
    assert _self_hits(served, vectors, kept, **kwargs) == []  # and the next search follows the new epoch
    np.testing.assert_array_equal(served.ids(), np.arange(len(kept)))


def test_a_compaction_committing_before_the_lookup_snapshot_is_searched_again(tmp_path, monkeypatch):
    """A compaction committed after the refresh but before the search's snapshot: reload and search again."""
    folder = tmp_path / "idx"
    writer, vectors, kept = _churned(folder, 3000, exact_threshold=1000)
    served = ImageIndex.open(folder)
    assert _self_hits(served, vectors, kept) == []
    original, compactions = ImageIndex._refresh, []

    def refresh_then_compact(self):
        original(self)
        if self is served and not compactions:
            compactions.append(writer.compact())

    snapshots, read_snapshot = [], Store.read_snapshot

    def counted(self):
        snapshots.append(self)
        return read_snapshot(self)

    monkeypatch.setattr(ImageIndex, "_refresh", refresh_then_compact)
    monkeypatch.setattr(Store, "read_snapshot", counted)
    assert _self_hits(served, vectors, kept) == []
    assert len(compactions) == 1 and len(snapshots) == 2  # the first snapshot was of the new epoch: searched again


def test_compaction_is_suggested_once_dead_rows_pass_a_share(tmp_path, caplog):
    folder = tmp_path / "idx"
    index = ImageIndex.create(folder, SPEC, D)
    index.add_items(random_unit(4000, D, seed=1), infos_for(range(4000)))
    index.save()
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in range(500)])  # 12.5%: no advice yet
    with caplog.at_level(logging.WARNING, logger="clipapp.index.image_index"):
        index.save()
        assert index.compaction_advice() is None and "--compact" not in caplog.text
        index.remove_paths([f"/photos/{i:07d}.jpg" for i in range(500, 1200)])  # 30%
        index.save()
    advice = index.compaction_advice()
    assert advice is not None and "1200 of the 4000 rows" in advice and f"--index {folder} --compact" in advice
    assert advice in caplog.text
    index.compact()
    assert index.compaction_advice() is None


def test_compaction_refuses_unsaved_changes_and_in_memory_indexes(tmp_path):
    index = ImageIndex.create(tmp_path / "idx", SPEC, D)
    index.add_items(random_unit(3, D), infos_for(range(3)))
    with pytest.raises(ClipAppError, match="unsaved changes"):
        index.compact()
    with pytest.raises(ClipAppError, match="in memory"):
        ImageIndex.in_memory(SPEC, D).compact()


# ---------------------------------------------------------------------------------------------------------------
# Real kills: timed at spread-out moments, and exactly at each step (the child kills itself there)
# ---------------------------------------------------------------------------------------------------------------
COMPACTOR = """
    import os, signal, sys, time
    from clipapp.index import ImageIndex, compaction, image_index
    from clipapp.index.store import Store

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    step = sys.argv[2]
    if step == "before-commit":
        Store.commit = die
    elif step == "before-rename":
        compaction.finish_compaction = die
    elif step == "before-cache":
        image_index.ImageIndex._follow_compaction = die
    index = ImageIndex.open(sys.argv[1])
    index.ensure_built()
    print("compacting", flush=True)
    started = time.perf_counter()
    index.compact()
    print("compacted", time.perf_counter() - started, flush=True)
"""


def _kill_base(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    base = tmp_path / "base"
    vectors = random_unit(30_000, D, seed=8)
    index = ImageIndex.create(base, SPEC, D, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(30_000)))
    index.save()
    removed = np.random.default_rng(4).choice(30_000, size=9000, replace=False)
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in removed])
    index.save()
    index.ensure_built()
    index.close()
    kept = sorted(set(range(30_000)) - set(removed.tolist()))
    return base, {f"/photos/{i:07d}.jpg": vectors[i] for i in kept}, vectors[kept[::3000]]


def _assert_before_or_after(folder: Path, expected: dict[str, np.ndarray], probes: np.ndarray) -> None:
    assert sqlite3.connect(folder / DB_NAME).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    index = ImageIndex.open(folder)
    rows = os.path.getsize(folder / VECTORS_NAME) // (4 * D)
    assert rows in (30_000, len(expected))  # the old file or the compacted one, nothing between
    assert len(index) == len(expected) and {r.path for r in index.records()} == set(expected)
    for paths, vectors in index.iter_vectors(4096):
        np.testing.assert_allclose(vectors, np.stack([expected[p] for p in paths]), atol=1e-6)
    top = [result.hits[0].path for result in index.search(probes, k=1)]
    assert [np.allclose(expected[p], q, atol=1e-5) for p, q in zip(top, probes, strict=True)] == [True] * len(probes)
    index.compact()  # and a later compaction finishes the job
    assert os.path.getsize(folder / VECTORS_NAME) // (4 * D) == len(expected)
    assert [p.name for p in folder.iterdir() if ".compact-" in p.name] == []
    index.close()


def _compactor(folder: Path, step: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(COMPACTOR), str(folder), step],
        cwd=REPO_DIR,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("step", ["before-commit", "before-rename", "before-cache"])
def test_compaction_killed_at_each_step_leaves_the_index_as_before_or_after(tmp_path, step):
    base, expected, probes = _kill_base(tmp_path)
    child = _compactor(base, step)
    _, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, err
    _assert_before_or_after(base, expected, probes)


def test_compaction_killed_at_random_moments_leaves_the_index_as_before_or_after(tmp_path):
    base, expected, probes = _kill_base(tmp_path)
    timing = tmp_path / "timing"
    shutil.copytree(base, timing)
    out, err = _compactor(timing, "none").communicate(timeout=300)
    took = float(out.split()[-1])
    rng = random.Random(7)
    for fraction in (0.1, 0.4, 0.7, 0.95, 1.2):
        folder = tmp_path / f"run-{fraction}"
        shutil.copytree(base, folder)
        child = _compactor(folder, "none")
        assert child.stdout.readline().strip() == "compacting", child.stderr.read()
        try:
            time.sleep(fraction * took * rng.uniform(0.8, 1.2))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.communicate()
        _assert_before_or_after(folder, expected, probes)
