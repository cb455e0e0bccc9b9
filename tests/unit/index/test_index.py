"""clipapp.index: exact and approximate search, persistence, incremental folder sync, query composition.
(The SQLite store, migration, crash safety, concurrency and tags: tests/unit/index/test_index_store.py.)

A small fake encoder (a fixed random projection of 8x8 downsampled pixels) stands in for CLIP, so these tests need
no model and count exactly which files get encoded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.index import (
    DB_NAME,
    VECTORS_NAME,
    FileInfo,
    ImageIndex,
    SearchResult,
    SyncReport,
    add_images,
    compose_query,
    ivf_nlist_for,
    parse_query,
    query_index,
    sync_folder,
    tqdm_progress,
)
from tests.support.fake_index import DIM, SPEC, FakeEncoder, clustered_unit, infos_for, random_unit, write_image

REPO_DIR = Path(__file__).resolve().parents[3]


def numpy_top_k(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ database.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    write_image(folder / "a.png", 1)
    write_image(folder / "b.jpg", 2)
    write_image(folder / "C.JPEG", 3)  # extensions are case-insensitive
    write_image(folder / "trips" / "d.png", 4)
    write_image(folder / "trips" / "deeper" / "e.webp", 5)
    write_image(folder / ".hidden.png", 6)  # hidden files are skipped
    write_image(folder / ".cache" / "f.png", 7)  # so are hidden folders
    (folder / "notes.txt").write_text("not an image")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------------------
def test_exact_search_equals_numpy_brute_force():
    vectors = random_unit(3000, 32, seed=1)
    queries = random_unit(25, 32, seed=2)
    index = ImageIndex.in_memory(SPEC, 32)
    index.add_items(vectors, infos_for(range(3000)))
    results = index.search(queries, k=10)
    assert index.index_type == "flat"
    expected_scores, expected_ids = numpy_top_k(vectors, queries, 10)
    assert [[hit.id for hit in result.hits] for result in results] == expected_ids.tolist()
    np.testing.assert_allclose([[hit.score for hit in r.hits] for r in results], expected_scores, atol=1e-5)
    assert results[0].hits[0].path == f"/photos/{expected_ids[0, 0]:07d}.jpg"


def test_search_edge_cases():
    index = ImageIndex.in_memory(SPEC, 8)
    assert index.search(random_unit(1, 8)[0], k=5) == [SearchResult()]  # empty index
    assert index.search(random_unit(3, 8), k=5) == [SearchResult()] * 3
    vectors = random_unit(4, 8, seed=3)
    index.add_items(vectors, infos_for(range(4)))
    hits = index.search(vectors[2], k=100)[0].hits  # (d,) query, k beyond the index
    assert len(hits) == 4 and hits[0].id == 2
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score >= 0.5 for h in index.search(vectors[2], k=4, threshold=0.5)[0].hits)
    assert index.search(vectors[2], k=4, threshold=1.01) == [SearchResult()]
    assert index.search(vectors[2] * 7.0, k=1)[0].hits[0].score == pytest.approx(1.0, abs=1e-5)  # normalized here
    with pytest.raises(ClipAppError, match="8-d"):
        index.search(random_unit(1, 9), k=1)
    with pytest.raises(ClipAppError, match="k must be"):
        index.search(vectors[0], k=0)
    with pytest.raises(ClipAppError, match="zeros"):
        index.search(np.zeros(8), k=1)


@pytest.mark.slow
def test_approximate_index_recall_on_100k_clustered_vectors():
    n, d = 100_000, 64
    vectors, queries = clustered_unit(n, d, 500, seed=10)
    index = ImageIndex.in_memory(SPEC, d)  # default threshold 50k: 100k vectors get an IVF index
    index.add_items(vectors, infos_for(range(n)))
    index.ensure_built()
    structure = index.structure
    assert structure.kind == "ivf" and structure.nlist == ivf_nlist_for(n) == min(round(4 * np.sqrt(n)), 1024)
    assert structure.nprobe < structure.nlist and structure.measured_recall >= 0.95
    results = index.search(queries, k=10)
    _, truth = numpy_top_k(vectors, queries, 10)
    recall = np.mean(
        [len({h.id for h in r.hits} & set(row)) / 10 for r, row in zip(results, truth.tolist(), strict=True)]
    )
    assert recall >= 0.95, (recall, structure)


def test_index_switches_between_exact_and_ivf():
    vectors = random_unit(1200, 16, seed=4)
    index = ImageIndex.in_memory(SPEC, 16, exact_threshold=500)
    index.add_items(vectors[:400], infos_for(range(400)))
    index.ensure_built()
    assert index.index_type == "flat"
    index.add_items(vectors[400:], infos_for(range(400, 1200)))  # grows past the threshold
    assert index.search(vectors[700], k=1)[0].hits[0].id == 700
    assert index.index_type == "ivf" and index.structure.trained_on == 1200
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in range(1000)])  # below half the threshold
    assert len(index) == 200 and index.search(vectors[1100], k=1)[0].hits[0].id == 1100
    assert index.index_type == "flat"


def test_ivf_removal_and_large_k():
    vectors = random_unit(3000, 16, seed=5)
    index = ImageIndex.in_memory(SPEC, 16, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(3000)))
    index.ensure_built()
    assert index.index_type == "ivf"
    index.remove_paths(["/photos/0000007.jpg"])
    assert all(hit.id != 7 for hit in index.search(vectors[7], k=20)[0].hits)
    hits = index.search(vectors[8], k=5000)[0].hits  # more than the probed lists hold: answered exactly
    assert len(hits) == 2999 and hits[0].id == 8
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# ---------------------------------------------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [50_000, 1000], ids=["flat", "ivf"])
def test_persistence_round_trip(tmp_path, threshold):
    vectors = random_unit(2500, 16, seed=6)
    index = ImageIndex.create(tmp_path / "idx", SPEC, 16, exact_threshold=threshold)
    index.add_items(vectors, infos_for(range(2500)))
    index.add_alias(FileInfo("/photos/copy-of-3.jpg", 1003, 3.0, f"{3:064x}"))
    index.remove_paths(["/photos/0000010.jpg"])
    generation = index.save()
    queries = random_unit(5, 16, seed=7)

    loaded = ImageIndex.open(tmp_path / "idx", expected_spec=SPEC)
    assert loaded.generation == generation and loaded.spec == SPEC and loaded.dim == 16
    assert len(loaded) == 2499 and loaded.path_count == 2500
    assert loaded.structure == index.structure and loaded.index_type == ("flat" if threshold > 2500 else "ivf")
    assert loaded.records() == index.records()
    np.testing.assert_array_equal(loaded.vectors(), index.vectors())
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    assert loaded.search(queries, k=7) == index.search(queries, k=7)
    assert loaded.search(vectors[3], k=1)[0].hits[0].aliases == ("/photos/copy-of-3.jpg",)
    with sqlite3.connect(tmp_path / "idx" / DB_NAME) as db:  # readable with ordinary tools
        meta = dict(db.execute("SELECT key, value FROM meta"))
        assert (meta["model_spec"], meta["embed_dim"], meta["format_version"]) == (SPEC, "16", "2")
        assert db.execute("SELECT count(*) FROM contents").fetchone()[0] == 2499
        assert db.execute("SELECT path FROM images WHERE sha256 = ? ORDER BY path", (f"{3:064x}",)).fetchall() == [
            ("/photos/0000003.jpg",),
            ("/photos/copy-of-3.jpg",),
        ]
    # new ids continue after the old ones, never reusing an id
    assert loaded.add_items(random_unit(1, 16, seed=8), infos_for([9999]))[0] == 2500


def test_commit_writes_only_what_changed(tmp_path, monkeypatch):
    """A commit of 10 images appends 10 vector rows and leaves the saved search structure alone; a reopen applies
    those rows to the saved structure instead of rebuilding it."""
    from clipapp.index import structure

    folder = tmp_path / "idx"
    index = ImageIndex.create(folder, SPEC, 8, exact_threshold=1000)
    vectors = random_unit(3010, 8, seed=11)
    index.add_items(vectors[:3000], infos_for(range(3000)))
    index.ensure_built()  # built inside the transaction: written to disk by the commit, not before
    assert not (folder / "faiss.json").exists()
    first = index.save()
    assert index.save() == first  # nothing changed: no new commit
    cache = json.loads((folder / "faiss.json").read_text())
    cache_file = folder / cache["file"]
    cache_stat = cache_file.stat()
    assert cache["ntotal"] == 3000 and index.index_type == "ivf"

    index.add_items(vectors[3000:], infos_for(range(3000, 3010)))
    index.update_file_stat("/photos/0000001.jpg", size=5, mtime=5.0)
    assert index.save() == first + 1
    assert (folder / VECTORS_NAME).stat().st_size == 3010 * 8 * 4  # appended, not rewritten
    assert json.loads((folder / "faiss.json").read_text()) == cache  # the cache was not rewritten for 10 rows
    assert cache_file.stat().st_mtime_ns == cache_stat.st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the saved structure should have been caught up, not rebuilt")

    monkeypatch.setattr(structure, "build", no_rebuild)
    reopened = ImageIndex.open(folder)
    assert [result.hits[0].id for result in reopened.search(vectors[3000:], k=1)] == list(range(3000, 3010))
    assert reopened.record("/photos/0000001.jpg").mtime == 5.0 and len(reopened) == 3010


KILL_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from clipapp.index import FileInfo, ImageIndex

    def vectors_for(ids):  # deterministic content per id, so the parent can check every row
        x = np.sin(np.outer(ids + 1.0, np.arange(1, 33))).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    index = ImageIndex.open(sys.argv[1])
    batch = int(sys.argv[2])
    while True:
        ids = np.arange(len(index), len(index) + batch)
        index.add_items(vectors_for(ids), [FileInfo(f"/img/{i:07d}.jpg", int(i), float(i), f"{i:064x}") for i in ids])
        print("saving", len(index), flush=True)
        started = time.perf_counter()
        index.save()
        print("saved", len(index), time.perf_counter() - started, flush=True)
""")


def _kill_vectors(ids: np.ndarray) -> np.ndarray:
    x = np.sin(np.outer(ids + 1.0, np.arange(1, 33))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_is_complete_generation(folder: Path, allowed_counts: set[int]) -> ImageIndex:
    index = ImageIndex.open(folder)
    n = len(index)
    assert n in allowed_counts, (n, allowed_counts)
    np.testing.assert_array_equal(index.ids(), np.arange(n))
    np.testing.assert_allclose(index.vectors(), _kill_vectors(np.arange(n)), atol=1e-6)
    assert sorted(r.path for r in index.records()) == [f"/img/{i:07d}.jpg" for i in range(n)]
    assert all(r.sha256 == f"{r.id:064x}" and r.path == f"/img/{r.id:07d}.jpg" for r in index.records())
    probes = np.array([0, n // 2, n - 1])
    assert [result.hits[0].id for result in index.search(_kill_vectors(probes), k=1)] == probes.tolist()
    assert index._search.ntotal == n
    return index


def test_process_killed_during_commits_keeps_every_commit(tmp_path):
    """SIGKILL a real process at spread-out moments of large add + commit cycles; the index must open with
    exactly the committed batches (or the one in flight, if its commit landed), nothing mixed or damaged."""
    batch = 20_000
    base = tmp_path / "base"
    index = ImageIndex.create(base, SPEC, 32, exact_threshold=10**9)
    ids = np.arange(batch)
    index.add_items(_kill_vectors(ids), [FileInfo(f"/img/{i:07d}.jpg", int(i), float(i), f"{i:064x}") for i in ids])
    index.save()
    index.close()

    env = {**os.environ, "PYTHONPATH": str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(1234)
    for fraction in (0.05, 0.3, 0.6, 0.9, 1.3):
        folder = tmp_path / f"run-{fraction}"
        shutil.copytree(base, folder)
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(folder), str(batch)],
            cwd=REPO_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        committed, started = batch, None
        try:
            first_save = None
            while True:  # let one cycle finish to learn how long it takes here, then kill during the next
                words = child.stdout.readline().split()
                assert words, child.stderr.read()
                if words[0] == "saving":
                    started = int(words[1])
                    if first_save is not None:
                        break
                else:
                    committed, first_save = int(words[1]), float(words[2])
            time.sleep(fraction * first_save * rng.uniform(0.8, 1.2))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            remaining, _ = child.communicate()
        for line in remaining.splitlines():
            words = line.split()
            if words[0] == "saving":
                started = int(words[1])
            else:
                committed = int(words[1])
        assert child.returncode == -signal.SIGKILL
        reopened = _assert_is_complete_generation(folder, {committed, started})
        # The next writer reuses the ids a killed transaction had allocated; their rows are overwritten.
        n = len(reopened)
        reopened.add_items(_kill_vectors(np.array([n])), [FileInfo(f"/img/{n:07d}.jpg", n, float(n), f"{n:064x}")])
        reopened.save()
        reopened.close()
        _assert_is_complete_generation(folder, {n + 1})


def test_open_refuses_another_model(tmp_path):
    ImageIndex.create(tmp_path / "idx", "ViT-B-32:laion2b_s34b_b79k", DIM)
    with pytest.raises(
        ClipAppError,
        match=r"built with model ViT-B-32:laion2b_s34b_b79k .*runs model demo.*"
        r"--model ViT-B-32:laion2b_s34b_b79k",
    ):
        ImageIndex.open(tmp_path / "idx", expected_spec="demo")
    with pytest.raises(ClipAppError, match="rebuild it"):
        ImageIndex.open(tmp_path / "idx", expected_dim=DIM + 1)
    with pytest.raises(ClipAppError, match="runs model demo"):
        ImageIndex.open_or_create(tmp_path / "idx", "demo", DIM)
    index = ImageIndex.open(tmp_path / "idx")
    with pytest.raises(ClipAppError, match="runs model fake-model"):
        sync_folder(index, tmp_path, FakeEncoder())  # vectors of two models never mix
    with pytest.raises(ClipAppError, match="already exists"):
        ImageIndex.create(tmp_path / "idx", "demo", DIM)


def test_open_missing_or_damaged_index_is_a_clear_error(tmp_path):
    with pytest.raises(ClipAppError, match="No index"):
        ImageIndex.open(tmp_path / "nothing-here")
    index = ImageIndex.create(tmp_path / "idx", SPEC, 8)
    index.add_items(random_unit(10, 8), infos_for(range(10)))
    index.save()
    index.close()
    vectors_file = tmp_path / "idx" / VECTORS_NAME
    vectors_file.write_bytes(vectors_file.read_bytes()[:-16])
    with pytest.raises(ClipAppError, match="damaged"):
        ImageIndex.open(tmp_path / "idx")
    (tmp_path / "idx" / DB_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(ClipAppError, match="cannot be read"):
        ImageIndex.open(tmp_path / "idx")


# ---------------------------------------------------------------------------------------------------------------
# Folder sync
# ---------------------------------------------------------------------------------------------------------------
def test_sync_is_incremental(tmp_path, photo_folder):
    encoder = FakeEncoder()
    index = ImageIndex.open_or_create(tmp_path / "idx", SPEC, DIM)
    report = sync_folder(index, photo_folder, encoder)
    assert report == SyncReport(added=5, updated=0, removed=0, total=5)
    assert sorted(Path(p).name for p in encoder.encoded_paths) == ["C.JPEG", "a.png", "b.jpg", "d.png", "e.webp"]

    encoder = FakeEncoder()
    index = ImageIndex.open(tmp_path / "idx", expected_spec=SPEC)
    report = sync_folder(index, photo_folder, encoder)  # nothing changed
    assert report == SyncReport(added=0, updated=0, removed=0, total=5)
    assert encoder.calls == Counter()

    generation = index.generation
    os.utime(photo_folder / "a.png", (time.time() + 100, time.time() + 100))  # touched, same bytes
    report = sync_folder(index, photo_folder, encoder)
    assert report.added == report.updated == 0 and encoder.calls == Counter()
    assert index.generation == generation + 1  # the new mtime is remembered: no hashing next time

    write_image(photo_folder / "b.jpg", 99)  # changed content
    (photo_folder / "trips" / "d.png").unlink()  # deleted
    report = sync_folder(index, photo_folder, encoder)
    assert report == SyncReport(added=0, updated=1, removed=1, total=4)
    assert encoder.encoded_paths == [str((photo_folder / "b.jpg").resolve())]
    b_vector = encoder._embed(Image.open(photo_folder / "b.jpg"))
    assert index.search(b_vector, k=1)[0].hits[0].path == str((photo_folder / "b.jpg").resolve())
    assert len(index) == 4 and len(ImageIndex.open(tmp_path / "idx")) == 4


def test_sync_stores_duplicates_once_and_keeps_moved_files(tmp_path, photo_folder):
    encoder = FakeEncoder()
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    shutil.copy(photo_folder / "a.png", photo_folder / "a-copy.png")
    report = sync_folder(index, photo_folder, encoder)
    assert report.added == 6 and len(index) == 5 and index.path_count == 6
    assert len(encoder.encoded_paths) == 5  # the copy was not encoded
    a_vector = index.vector_for_path(str((photo_folder / "a.png").resolve()))
    hit = index.search(a_vector, k=1)[0].hits[0]
    assert {hit.path, *hit.aliases} == {str((photo_folder / n).resolve()) for n in ("a.png", "a-copy.png")}

    encoder = FakeEncoder()
    shutil.copy(photo_folder / "b.jpg", photo_folder / "trips" / "b-again.jpg")  # a new copy of indexed content
    (photo_folder / "C.JPEG").rename(photo_folder / "trips" / "C-moved.jpeg")  # a move
    (photo_folder / "a.png").unlink()  # the original goes, its copy stays
    report = sync_folder(index, photo_folder, encoder)
    assert report == SyncReport(added=2, updated=0, removed=2, total=6)
    assert encoder.calls == Counter()  # nothing re-encoded
    assert len(index) == 5
    assert index.search(a_vector, k=1)[0].hits[0] == replace(
        hit, path=str((photo_folder / "a-copy.png").resolve()), aliases=()
    )


def test_sync_skips_unreadable_files_and_keeps_going(tmp_path, photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (photo_folder / "empty.png").write_bytes(b"")
    encoder = FakeEncoder()
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    report = sync_folder(index, photo_folder, encoder, batch_size=2)
    assert report.added == 5 and report.total == 5
    assert sorted(Path(s.path).name for s in report.skipped) == ["broken.jpg", "empty.png"]
    assert all(s.error for s in report.skipped)

    write_image(photo_folder / "a.png", 1)  # rewritten identically...
    (photo_folder / "b.jpg").write_bytes(b"garbage now")  # ...while b.jpg gets corrupted
    report = sync_folder(index, photo_folder, encoder)
    assert {Path(s.path).name for s in report.skipped} == {"broken.jpg", "empty.png", "b.jpg"}
    assert index.record(str((photo_folder / "b.jpg").resolve())) is None  # its old vector no longer applies
    assert report.total == 4


def test_sync_only_touches_its_own_folder_and_checkpoints(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for i in range(7):
        write_image(first / f"{i}.png", 100 + i)
        write_image(second / f"{i}.png", 200 + i)
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    saves = []
    original_save = index.save

    def counting_save() -> int:
        saves.append((original_save(), index.path_count))
        return saves[-1][0]

    index.save = counting_save
    sync_folder(index, first, FakeEncoder(), batch_size=2, save_every_batches=1)
    # the bookkeeping (nothing to commit here), batches 1, 2, 3 (not the last one), then the final commit
    assert saves == [(0, 0), (1, 2), (2, 4), (3, 6), (4, 7)]
    sync_folder(index, second, FakeEncoder())
    shutil.rmtree(second)
    second.mkdir()
    report = sync_folder(index, first, FakeEncoder())
    assert report.removed == 0 and report.total == 14  # the other folder's records are not this sync's
    assert sync_folder(index, second, FakeEncoder()).removed == 7
    with pytest.raises(ClipAppError, match="not a folder"):
        sync_folder(index, tmp_path / "missing", FakeEncoder())


def test_sync_reports_progress(tmp_path, photo_folder):
    calls = []
    index = ImageIndex.in_memory(SPEC, DIM)
    sync_folder(index, photo_folder, FakeEncoder(), batch_size=2, progress=lambda *a: calls.append(a))
    embedding = [(done, total) for done, total, message in calls if message == "Embedding images"]
    assert embedding[0] == (0, 5) and embedding[-1] == (5, 5)
    assert [done for done, _ in embedding] == sorted(done for done, _ in embedding)
    with tqdm_progress(disable=True) as bar:  # the CLI adapter accepts the same calls
        sync_folder(ImageIndex.in_memory(SPEC, DIM), photo_folder, FakeEncoder(), progress=bar)


def test_add_images_for_uploads(tmp_path):
    encoder = FakeEncoder()
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    red = Image.new("RGB", (10, 10), (250, 10, 10))
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    report = add_images(index, [("red.png", red), ("noise.png", noise), ("red-again.png", red.copy())], encoder)
    assert report == SyncReport(added=3, updated=0, removed=0, total=3)
    assert encoder.calls["images"] == 2  # identical pixels encoded once
    assert index.record("red.png").source == "upload"
    assert add_images(index, [("red.png", red)], encoder).added == 0 and encoder.calls["images"] == 2
    report = add_images(index, [("red.png", noise)], encoder)  # same name, new pixels
    assert report.updated == 1 and encoder.calls["images"] == 2  # and that content was already known
    loaded = ImageIndex.open(tmp_path / "idx")
    assert loaded.search(encoder._embed(noise), k=1)[0].hits[0].aliases == ("red.png",)


# ---------------------------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------------------------
def test_parse_query():
    assert parse_query("dog + snow - grass") == [(1.0, "dog"), (1.0, "snow"), (-1.0, "grass")]
    assert parse_query("  a red t-shirt  -blue ") == [(1.0, "a red t-shirt"), (-1.0, "blue")]
    assert parse_query("+ cat") == [(1.0, "cat")]
    assert parse_query("- grass + dog") == [(-1.0, "grass"), (1.0, "dog")]
    assert parse_query("img:/x/my-photo.jpg + snow") == [(1.0, "img:/x/my-photo.jpg"), (1.0, "snow")]
    for bad, message in [
        ("", "empty"),
        ("   ", "empty"),
        ("- grass", "only subtracts"),
        ("- a - b", "only subtracts"),
        ("dog +", "nothing after"),
        ("dog + - snow", "nothing after"),
    ]:
        with pytest.raises(ClipAppError, match=message):
            parse_query(bad)


def test_compose_query(tmp_path):
    encoder = FakeEncoder()
    dog, snow, grass = encoder.encode_texts(["dog", "snow", "grass"])
    expected = dog + snow - grass
    np.testing.assert_allclose(
        compose_query("dog + snow - grass", encoder), expected / np.linalg.norm(expected), atol=1e-6
    )
    templates = ["a photo of a {}.", "a drawing of a {}."]
    ensemble = encoder.text_embeddings(["dog", "grass"], templates)
    expected = ensemble[0] - 0.5 * ensemble[1]
    np.testing.assert_allclose(
        compose_query([(1.0, "dog"), (-0.5, "grass")], encoder, templates),
        expected / np.linalg.norm(expected),
        atol=1e-6,
    )

    photo = write_image(tmp_path / "my-photo.png", 5)
    image_vector = encoder._embed(Image.open(photo))
    for query in (f"{photo} + snow", f"img:{photo} + snow"):
        composed = compose_query(query, encoder)
        expected = image_vector + snow
        np.testing.assert_allclose(composed, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.linalg.norm(compose_query("cat", encoder)) == pytest.approx(1.0)
    with pytest.raises(ClipAppError, match="cancel"):
        compose_query("dog - dog", encoder)
    with pytest.raises(ClipAppError, match="only subtracts"):
        compose_query([(-1.0, "dog")], encoder)
    with pytest.raises(ClipAppError, match="does not exist"):
        compose_query("img:/no/such/file.png", encoder)
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ClipAppError, match="junk.png"):
        compose_query(f"{tmp_path / 'junk.png'} + dog", encoder)


def test_query_index_finds_an_image_by_image_and_text(tmp_path, photo_folder):
    encoder = FakeEncoder()
    index = ImageIndex.in_memory(SPEC, DIM)
    sync_folder(index, photo_folder, encoder)
    target = str((photo_folder / "trips" / "d.png").resolve())
    assert query_index(index, target, encoder, k=1).hits[0].path == target
    hits = query_index(index, "a dog", encoder, k=3).hits
    assert len(hits) == 3 and hits[0].score >= hits[-1].score
    with pytest.raises(ClipAppError, match="runs model"):
        query_index(index, "a dog", FakeEncoder(spec="other"), k=3)


def test_sync_and_query_with_the_real_clip_service(tmp_path, tiny_service, photos):
    """The duck-typed encoder contract, checked against ClipService itself (a tiny random open_clip model)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:4]:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    index = ImageIndex.open_or_create(tmp_path / "idx", tiny_service.spec, tiny_service.embed_dim)
    report = sync_folder(index, folder, tiny_service, batch_size=2)
    assert report.added == 4 and [Path(s.path).name for s in report.skipped] == ["broken.jpg"]
    target = str((folder / photos[1].name).resolve())
    assert query_index(index, target, tiny_service, k=1).hits[0].path == target
    assert len(query_index(index, "a cat + a photo - text", tiny_service, k=3, templates=["a photo of {}."]).hits) == 3
    with pytest.raises(ClipAppError, match="--model"):
        ImageIndex.open(tmp_path / "idx", expected_spec="demo")
