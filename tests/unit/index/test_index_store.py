"""clipapp.index's store: migration of the old format, the faiss cache as a derived cache, crash safety with real
processes killed, two processes on one index, tags, iter_vectors, EXIF dates, the size policy under a budget."""

from __future__ import annotations

import json
import os
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
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.index import DB_NAME, FileInfo, ImageIndex, SearchResult, migrate, structure, sync_folder
from tests.support.fake_index import DIM, SPEC, FakeEncoder, clustered_unit, infos_for, random_unit, write_image

REPO_DIR = Path(__file__).resolve().parents[3]
FIXTURE = REPO_DIR / "tests" / "data" / "old_index_v1"
ENV = {**os.environ, "PYTHONPATH": str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _no_rebuild(*args, **kwargs):
    raise AssertionError("the search structure was rebuilt; it should have been loaded or caught up")


def _run(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=REPO_DIR,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _committed_paths(folder: Path) -> int:
    try:
        with sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM paths").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


# ---------------------------------------------------------------------------------------------------------------
# Migration (fixture written by the old code, see tests/data/README.md)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["photos", "ivf"])
def test_old_index_converts_once_without_reencoding_and_searches_the_same(tmp_path, monkeypatch, name):
    expected = json.loads((FIXTURE / "expected.json").read_text())[name]
    folder = tmp_path / name
    shutil.copytree(FIXTURE / name, folder)
    old_meta = json.loads(next(folder.glob("meta-*.json")).read_text())
    monkeypatch.setattr(structure, "build", _no_rebuild)  # the old faiss file is reused as the cache

    index = ImageIndex.open(folder)  # no encoder anywhere: nothing can be re-encoded
    assert (folder / DB_NAME).exists() and not (folder / "manifest.json").exists()
    assert not list(folder.glob("vectors-*.npy")) and not list(folder.glob("meta-*.json"))
    assert len(index) == expected["count"]
    queries = np.asarray(expected["queries"], dtype=np.float32)
    results = index.search(queries, k=expected["k"])
    for result, old_hits in zip(results, expected["hits"], strict=False):
        assert [(h.id, h.path, list(h.aliases)) for h in result.hits] == [
            (h["id"], h["path"], h["aliases"]) for h in old_hits
        ]
        np.testing.assert_allclose([h.score for h in result.hits], [h["score"] for h in old_hits], atol=1e-6)
    old_records = sorted(old_meta["items"], key=lambda r: r["path"])
    new_records = sorted((vars(r) for r in index.records()), key=lambda r: r["path"])
    assert [{k: r[k] for k in old_records[0]} for r in new_records] == old_records
    if name == "ivf":
        assert index.structure.kind == "ivf"
        assert {k: getattr(index.structure, k) for k in expected["structure"]} == expected["structure"]
    index.close()

    monkeypatch.setattr(migrate, "_convert", lambda *a: (_ for _ in ()).throw(AssertionError("converted twice")))
    again = ImageIndex.open(folder)
    assert again.search(queries, k=expected["k"])[0].hits[0].id == expected["hits"][0][0]["id"]
    new_id = again.add_items(random_unit(1, again.dim, seed=3), infos_for([999_999]))[0]
    assert new_id == old_meta["next_id"]  # ids continue after the old ones


def test_conversion_killed_before_its_commit_is_redone(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    shutil.copytree(FIXTURE / "photos", folder)
    real_replace = os.replace

    def crash_on_db(src, dst):
        if str(dst).endswith(DB_NAME):
            raise KeyboardInterrupt("killed just before the commit")
        return real_replace(src, dst)

    monkeypatch.setattr(migrate.os, "replace", crash_on_db)
    with pytest.raises(KeyboardInterrupt):
        ImageIndex.open(folder)
    assert (folder / "manifest.json").exists() and not (folder / DB_NAME).exists()
    monkeypatch.setattr(migrate.os, "replace", real_replace)
    assert len(ImageIndex.open(folder)) == 7


# ---------------------------------------------------------------------------------------------------------------
# The faiss structure is a derived cache
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["delete", "garbage", "bad-json"])
def test_missing_or_corrupt_faiss_cache_is_rebuilt_from_the_database(tmp_path, damage):
    vectors = random_unit(3000, 16, seed=21)
    folder = tmp_path / "idx"
    index = ImageIndex.create(folder, SPEC, 16, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(3000)))
    index.remove_paths(["/photos/0000005.jpg"])
    index.save()
    queries = random_unit(20, 16, seed=22)
    before = index.search(queries, k=10)
    index.close()
    cache = json.loads((folder / "faiss.json").read_text())
    if damage == "delete":
        (folder / cache["file"]).unlink()
    elif damage == "garbage":
        (folder / cache["file"]).write_bytes(b"\0garbage" * 1000)
    else:
        (folder / "faiss.json").write_text("{not json")
    reopened = ImageIndex.open(folder)
    assert len(reopened) == 2999 and reopened.index_type == "ivf"
    assert reopened.search(queries, k=10) == before  # the rebuild is seeded: the same structure again
    assert json.loads((folder / "faiss.json").read_text())["ntotal"] == 2999  # and it was saved again


def test_another_process_commits_are_seen_on_the_next_search(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    vectors = random_unit(1210, 16, seed=31)
    served = ImageIndex.create(folder, SPEC, 16, exact_threshold=1000)
    served.add_items(vectors[:1200], infos_for(range(1200)))
    served.save()
    assert served.search(vectors[1205], k=1)[0].hits[0].id != 1205 and served.index_type == "ivf"
    np.save(tmp_path / "new.npy", vectors[1200:])
    writer = _run(
        """
        import sys, numpy as np
        from clipapp.index import ImageIndex
        from tests.support.fake_index import infos_for
        index = ImageIndex.open(sys.argv[1])
        index.add_items(np.load(sys.argv[2]), infos_for(range(1200, 1210)))
        index.remove_paths(["/photos/0000007.jpg"])
        index.save()
    """,
        folder,
        tmp_path / "new.npy",
    )
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    monkeypatch.setattr(structure, "build", _no_rebuild)  # the delta is applied, not a rebuild
    assert [result.hits[0].id for result in served.search(vectors[1200:], k=1)] == list(range(1200, 1210))
    assert all(hit.id != 7 for hit in served.search(vectors[7], k=5)[0].hits)
    assert len(served) == 1209 and served.record("/photos/0000007.jpg") is None


SYNCER = """
    import sys
    from clipapp.index import ImageIndex, sync_folder
    from tests.support.fake_index import FakeEncoder
    index = ImageIndex.open(sys.argv[1])
    print(sync_folder(index, sys.argv[2], FakeEncoder(), batch_size=int(sys.argv[3])), flush=True)
"""


def test_two_processes_syncing_one_index_do_not_corrupt_it(tmp_path):
    photos, folder = tmp_path / "photos", tmp_path / "idx"
    for i in range(40):
        write_image(photos / f"{i:03d}.png", 1000 + i)
    ImageIndex.create(folder, SPEC, DIM).close()
    syncers = [_run(SYNCER, folder, photos, batch) for batch in (3, 5)]
    for syncer in syncers:
        _, err = syncer.communicate(timeout=300)
        assert syncer.returncode == 0, err

    with sqlite3.connect(folder / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    index = ImageIndex.open(folder)
    assert len(index) == 40 and index.path_count == 40
    encoder = FakeEncoder()
    for path in sorted(photos.iterdir()):
        vector = encoder._embed(Image.open(path))
        assert index.search(vector, k=1)[0].hits[0].path == str(path.resolve())
        np.testing.assert_allclose(index.vector_for_path(str(path.resolve())), vector, atol=1e-6)
    assert sync_folder(index, photos, encoder).added == 0 and encoder.calls["encode_image_files"] == 0


# ---------------------------------------------------------------------------------------------------------------
# Crash safety: real processes killed with SIGKILL
# ---------------------------------------------------------------------------------------------------------------
SLOW_SYNCER = """
    import sys, time
    from clipapp.index import ImageIndex, sync_folder
    from tests.support.fake_index import FakeEncoder

    class SlowEncoder(FakeEncoder):  # about as slow per image as a small CLIP on a CPU
        def _embed(self, image):
            time.sleep(0.03)
            return super()._embed(image)

    sync_folder(ImageIndex.open(sys.argv[1]), sys.argv[2], SlowEncoder(), batch_size=4)
"""


def test_sync_killed_midway_keeps_committed_batches_and_a_second_sync_finishes(tmp_path):
    photos, folder = tmp_path / "photos", tmp_path / "idx"
    for i in range(80):
        write_image(photos / f"{i:03d}.jpg", 2000 + i)
    ImageIndex.create(folder, SPEC, DIM).close()
    child = _run(SLOW_SYNCER, folder, photos)
    try:
        while _committed_paths(folder) < 12 and child.poll() is None:
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    index = ImageIndex.open(folder)
    committed = index.path_count
    assert 12 <= committed < 80 and len(index) == committed
    encoder = FakeEncoder()
    for record in index.records():  # every committed row has its own, whole vector
        np.testing.assert_allclose(index.vector(record.id), encoder._embed(Image.open(record.path)), atol=1e-6)
    report = sync_folder(index, photos, encoder)
    assert report.added == 80 - committed and report.total == 80
    assert len(encoder.encoded_paths) == 80 - committed  # resumed: the committed images were not encoded again


REBUILDER = """
    import sys
    from clipapp.index import ImageIndex
    index = ImageIndex.open(sys.argv[1])
    while True:
        print("rebuilding", flush=True)
        index.rebuild()  # writes the cache file each time (not in a transaction)
"""


def test_kill_during_faiss_rebuild_loses_nothing(tmp_path):
    folder = tmp_path / "idx"
    vectors = random_unit(20_000, 32, seed=41)
    index = ImageIndex.create(folder, SPEC, 32, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(20_000)))
    index.save()
    index.close()
    rng = np.random.default_rng(5)
    for _ in range(4):
        child = _run(REBUILDER, folder)
        for _ in range(int(rng.integers(1, 3))):
            child.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 1.5)))
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
        reopened = ImageIndex.open(folder)
        assert len(reopened) == 20_000
        probes = [0, 12_345, 19_999]
        assert [result.hits[0].id for result in reopened.search(vectors[probes], k=1)] == probes
        reopened.close()
    reopened = ImageIndex.open(folder)
    reopened.rebuild()  # a successful cache write removes what killed writers left behind
    assert sorted(p.name for p in folder.iterdir() if "faiss" in p.name) == ["faiss-20000-0.index", "faiss.json"]


# ---------------------------------------------------------------------------------------------------------------
# Tags and vector iteration (for classify --index)
# ---------------------------------------------------------------------------------------------------------------
def test_tags_are_stored_read_back_and_filter_search(tmp_path):
    vectors = random_unit(1000, 16, seed=51)
    folder = tmp_path / "idx"
    index = ImageIndex.create(folder, SPEC, 16, exact_threshold=100)
    index.add_items(vectors, infos_for(range(1000)))
    index.add_alias(FileInfo("/photos/alias-of-3.jpg", 1, 1.0, f"{3:064x}"))
    cats = {f"/photos/{i:07d}.jpg": [("cat", 0.9), ("pet", 0.6)] for i in range(0, 1000, 3)}
    assert index.set_tags({**cats, "/photos/0000001.jpg": [("dog", 0.8)]}) == len(cats) + 1
    index.save()
    index.close()

    index = ImageIndex.open(folder)
    assert index.tags("/photos/0000003.jpg") == [("cat", 0.9), ("pet", 0.6)]
    assert index.tags("/photos/alias-of-3.jpg") == [("cat", 0.9), ("pet", 0.6)]  # tags belong to the content
    assert index.tags("/photos/0000002.jpg") == [] and index.tag_counts() == {"cat": 334, "pet": 334, "dog": 1}
    queries = random_unit(10, 16, seed=52)
    cat_ids = np.arange(0, 1000, 3)
    truth = (queries @ vectors[cat_ids].T).argsort(axis=1)[:, ::-1][:, :10]
    # 334 tagged > exact_threshold: answered by the faiss structure with an id selector
    for result, expected in zip(index.search(queries, k=10, tag="cat"), truth, strict=False):
        assert all(h.id % 3 == 0 for h in result.hits) and len(result.hits) == 10
        assert len({h.id for h in result.hits} & set(cat_ids[expected].tolist())) >= 8
    assert [h.id for h in index.search(vectors[5], k=5, tag="dog")[0].hits] == [1]  # small set: exact
    assert index.search(vectors[5], k=5, tag="unicorn") == [SearchResult()]
    assert index.set_tags({"/photos/0000003.jpg": []}) == 1 and index.tags("/photos/0000003.jpg") == []
    index.remove_paths(["/photos/0000006.jpg"])
    assert index.tag_counts()["cat"] == 332
    with pytest.raises(ClipAppError, match="not in the index"):
        index.set_tags({"/nowhere.jpg": [("cat", 1.0)]})


def test_iter_vectors_yields_every_image_once_in_bounded_batches(tmp_path):
    vectors = random_unit(250, 8, seed=61)
    index = ImageIndex.create(tmp_path / "idx", SPEC, 8)
    index.add_items(vectors, infos_for(range(250)))
    index.add_alias(FileInfo("/photos/zz-copy-of-4.jpg", 1, 1.0, f"{4:064x}"))
    index.remove_paths(["/photos/0000010.jpg"])
    batches = list(index.iter_vectors(batch_rows=64))
    assert [len(paths) for paths, _ in batches] == [64, 64, 64, 57]
    assert all(v.dtype == np.float32 and v.shape == (len(p), 8) for p, v in batches)
    paths = [p for batch, _ in batches for p in batch]
    assert paths == [f"/photos/{i:07d}.jpg" for i in range(250) if i != 10]  # first path per image, by id
    np.testing.assert_allclose(np.concatenate([v for _, v in batches]), np.delete(vectors, 10, axis=0), atol=1e-6)
    with pytest.raises(ClipAppError, match="batch_rows"):
        next(index.iter_vectors(batch_rows=0))


# ---------------------------------------------------------------------------------------------------------------
# Metadata and policy
# ---------------------------------------------------------------------------------------------------------------
def test_sync_records_the_exif_capture_date(tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "plain.jpg", 1)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:05"  # DateTimeOriginal
    Image.open(photos / "plain.jpg").save(photos / "dated.jpg", exif=exif)
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    sync_folder(index, photos, FakeEncoder())
    assert index.record(str((photos / "dated.jpg").resolve())).captured_at == "2019-07-14 18:30:05"
    assert index.record(str((photos / "plain.jpg").resolve())).captured_at is None
    with sqlite3.connect(tmp_path / "idx" / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM images WHERE captured_at LIKE '2019-%'").fetchone()[0] == 1


def test_memory_budget_chooses_compressed_codes_with_exact_rerank(tmp_path):
    n, d = 20_000, 64
    vectors, queries = clustered_unit(n, d, 300, seed=71)
    budget = n * (4 * d + 8) // 4  # a quarter of what IVF-Flat would hold
    index = ImageIndex.create(tmp_path / "idx", SPEC, d, exact_threshold=1000, max_memory=budget)
    index.add_items(vectors, infos_for(range(n)))
    index.save()
    s = index.structure
    assert s.kind == "ivfpq" and s.pq_m == d // 4 and s.rerank >= 10 and s.measured_recall >= 0.97
    assert index.memory_bytes()["faiss"] <= budget
    results = index.search(queries, k=10)  # fresh queries, not stored vectors
    truth = (queries @ vectors.T).argsort(axis=1)[:, ::-1][:, :10]
    recall = np.mean(
        [len({h.id for h in r.hits} & set(row.tolist())) / 10 for r, row in zip(results, truth, strict=True)]
    )
    assert recall >= 0.95, (recall, s)
    exact = queries[0] @ vectors[results[0].hits[0].id]
    assert results[0].hits[0].score == pytest.approx(float(exact), abs=1e-5)  # re-ranked scores are exact
    index.set_max_memory(None)  # no budget: IVF-Flat is due only after the collection doubles
    assert index.structure.kind == "ivfpq"


def test_cli_memory_budget_and_tag_filter(capsys, tiny_spec, photos, tmp_path):
    from clipapp.app.cli import main

    folder, index_path = tmp_path / "pics", tmp_path / "index"
    folder.mkdir()
    for photo in photos[:4]:
        shutil.copy(photo, folder / photo.name)
    assert (
        main(
            [
                "index",
                str(folder),
                "--index",
                str(index_path),
                "--model",
                tiny_spec,
                "--json",
                "--max-index-memory",
                "64MB",
            ]
        )
        == 0
    )
    capsys.readouterr()
    index = ImageIndex.open(index_path)
    assert index.settings.max_memory == 64 << 20
    tagged = str((folder / photos[2].name).resolve())
    index.set_tags({tagged: [("cat", 0.7)]})
    index.save()
    assert (
        main(
            ["search", "--index", str(index_path), "--text", "a photo", "--tag", "cat", "--model", tiny_spec, "--json"]
        )
        == 0
    )
    assert [hit["path"] for hit in json.loads(capsys.readouterr().out)["results"]] == [tagged]
    assert (
        main(["index", str(folder), "--index", str(index_path), "--model", tiny_spec, "--max-index-memory", "lots"])
        == 2
    )
    assert "not a memory size" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Creating an index: atomic, and two processes with different models do not both "win"
# ---------------------------------------------------------------------------------------------------------------
CREATOR = """
    import os, sys
    from clipapp.errors import ClipAppError
    from clipapp.index import ImageIndex
    folder, spec, dim, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print("ready", flush=True)
    while not os.path.exists(go):  # both start creating at the same moment
        pass
    try:
        index = ImageIndex.open_or_create(folder, spec, dim)
        print("created", index.spec, index.dim, flush=True)
    except ClipAppError as exc:
        print("refused", exc, flush=True)
"""


def _race(folder: Path, go: Path, models: list[tuple[str, int]]) -> list[str]:
    children = [_run(CREATOR, folder, spec, dim, go) for spec, dim in models]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_two_processes_creating_one_index_with_different_models_one_is_refused_by_name(tmp_path):
    models = [("model-a", 16), ("model-b", 32)]
    for round_no in range(4):
        folder, go = tmp_path / f"idx{round_no}", tmp_path / f"go{round_no}"
        outputs = _race(folder, go, models)
        created = [(out, spec) for out, (spec, _) in zip(outputs, models, strict=True) if out.startswith("created")]
        refused = [out for out in outputs if out.startswith("refused")]
        assert len(created) == 1 and len(refused) == 1, outputs
        winner = created[0][1]
        assert winner in refused[0] and "Traceback" not in refused[0]  # the message names the index's model
        index = ImageIndex.open(folder)
        assert index.spec == winner and index.dim == dict(models)[winner]
        assert sqlite3.connect(folder / DB_NAME).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [p.name for p in folder.iterdir() if p.name.endswith(".creating")] == []


def test_two_processes_creating_one_index_with_the_same_model_both_use_it(tmp_path):
    outputs = _race(tmp_path / "idx", tmp_path / "go", [("model-a", 16), ("model-a", 16)])
    assert outputs == ["created model-a 16", "created model-a 16"]


def test_the_loser_of_a_create_race_gets_the_winners_model_in_its_error(tmp_path):
    """The path a process takes when another created the database between its existence check and its own link:
    opening with a create request for another model names the model the index has."""
    from clipapp.index.store import Store

    ImageIndex.create(tmp_path / "idx", "model-a", 16).close()
    with pytest.raises(ClipAppError, match=r"created by another process with model model-a \(16-d.*--model model-a"):
        Store(tmp_path / "idx", create={"model_spec": "model-b", "embed_dim": 16, "settings": "{}"})
    same = Store(tmp_path / "idx", create={"model_spec": "model-a", "embed_dim": 16, "settings": "{}"})
    assert same.meta["model_spec"] == "model-a"
    same.close()


def test_automatic_list_count_grows_past_1024_only_for_large_indexes():
    assert structure.ivf_nlist_for(1_000_000) == 1024  # measured best at 1M (docs/benchmarks.md)
    assert structure.ivf_nlist_for(3_999_999) == 1024
    assert structure.ivf_nlist_for(10_000_000) == structure.LARGE_MAX_NLIST
    assert structure.ivf_nlist_for(10_000_000, max_nlist=2048) == 2048  # an index's own setting wins
    assert structure.ivf_nlist_for(1_000, max_nlist=2048) == 1_000 // structure.MIN_POINTS_PER_CENTROID


def test_more_lists_than_the_flat_limit_use_an_hnsw_coarse_quantizer_that_searches_reopens_and_removes(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(structure, "FLAT_QUANTIZER_MAX_NLIST", 64)  # 1024 at full size; 80k vectors took 34 s
    n, d = 8_000, 16
    vectors, queries = clustered_unit(n, d, 200, seed=5)
    index = ImageIndex.create(tmp_path / "idx", SPEC, d, exact_threshold=1000)
    index.add_items(vectors, infos_for(range(n)))
    index.save()
    s = index.structure
    assert s.kind == "ivf" and s.nlist > 64, s
    built = index._search.index  # the quantizer kind is what this test is about
    assert isinstance(faiss_quantizer(built), structure.faiss.IndexHNSWFlat)
    truth = (queries @ vectors.T).argsort(axis=1)[:, ::-1][:, :10]

    def recall(idx: ImageIndex) -> float:
        results = idx.search(queries, k=10)
        return float(
            np.mean([len({h.id for h in r.hits} & set(t.tolist())) / 10 for r, t in zip(results, truth, strict=True)])
        )

    before = recall(index)
    assert before >= 0.95, (before, s)
    index.close()
    reopened = ImageIndex.open(tmp_path / "idx")
    assert reopened.structure.nlist == s.nlist and recall(reopened) == before
    gone = {int(truth[0][0])}
    reopened.remove_paths([infos_for([i])[0].path for i in gone])
    reopened.save()
    assert not gone & {h.id for h in reopened.search(queries[:1], k=10)[0].hits}


def faiss_quantizer(index):
    return structure.faiss.downcast_index(structure.faiss.extract_index_ivf(index).quantizer)
