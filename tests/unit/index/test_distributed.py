"""Distributed indexing on Ray: a local 2-CPU Ray gives the same index as the single-process path.

One local Ray is started for the module (~5 s); each Ray Data job then starts its actors (~5-10 s on 2 cores), so
the expensive runs happen once in module fixtures and the tests compare their results.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipapp.errors import ClipAppError
from clipapp.index import ImageIndex, sync_folder
from clipapp.index.distributed import (
    EmbedActor,
    RayEncoder,
    cluster_plan,
    index_folder_ray,
    ray_session,
    sync_folder_ray,
)
from clipapp.index.distributed.session import _auto_address, _check_reachable
from clipapp.index.distributed.shards import write_shard
from tests.support.paths import TESTS_DIR

N_IMAGES = 24
CORRUPT = "broken.jpg"
DUPLICATE = "copy-of-03.png"


def _make_images(folder) -> None:
    """Varied real files: noise, gradients, shapes; RGB/L/RGBA; PNG and JPEG; several sizes; plus one
    byte-identical copy (an alias) and one corrupt file (skipped)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_IMAGES):
        size = (24 + 8 * (i % 5), 20 + 6 * (i % 4))
        kind = i % 4
        if kind == 0:
            image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        elif kind == 1:
            ramp = np.linspace(0, 255, size[0], dtype=np.float32)[None, :] * np.ones((size[1], 1), np.float32)
            image = Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 20 * i % 256)], -1).astype(np.uint8))
        elif kind == 2:
            image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            draw.ellipse([2, 2, size[0] - 3, size[1] - 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw.line([0, 0, size[0], size[1]], fill=(255, 255, 255), width=3)
        else:
            image = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")
        if i % 6 == 5:
            image = image.convert("RGBA")
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        if i % 3 == 1 and image.mode != "RGBA":
            image.save(sub / f"{i:02d}.jpg", quality=90)
        else:
            image.save(sub / f"{i:02d}.png")
    shutil.copyfile(folder / "b" / "02.png", folder / DUPLICATE)
    (folder / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray (2 CPUs) for the whole module; sync_folder_ray(address="auto") reuses it."""
    with pytest.MonkeyPatch.context() as patch:
        # The workers are other processes: they learn the tiny model's config folder from this variable.
        patch.setenv("CLIPAPP_MODEL_CONFIGS", str(TESTS_DIR / "data"))
        with ray_session("local", num_cpus=2) as ray:
            yield ray


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed") / "images"
    _make_images(folder)
    return folder


@pytest.fixture(scope="module")
def single(image_dir, tiny_service, tmp_path_factory):
    index = ImageIndex.open_or_create(
        tmp_path_factory.mktemp("single") / "index", tiny_service.spec, tiny_service.embed_dim
    )
    report = sync_folder(index, image_dir, tiny_service)
    return index, report


@pytest.fixture(scope="module")
def on_ray(ray_cluster, image_dir, tiny_spec, tiny_service, tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "index"
    index = ImageIndex.open_or_create(path, tiny_spec, tiny_service.embed_dim)
    stats: dict = {}
    # batch_size 8: 3 batches over 2 actors, and other batches than the single-process run (32).
    report = sync_folder_ray(index, image_dir, address="auto", spec=tiny_spec, num_actors=2, batch_size=8, stats=stats)
    return path, report, stats


def _vectors_by_path(index: ImageIndex) -> dict[str, np.ndarray]:
    return {r.path: index.vector(r.id) for r in index.records()}


def test_same_report_and_paths(single, on_ray):
    (_, single_report), (_, ray_report, stats) = single, on_ray
    assert ray_report == single_report
    assert ray_report.added == N_IMAGES + 1 and ray_report.total == N_IMAGES + 1
    assert [s.path.endswith(CORRUPT) for s in ray_report.skipped] == [True]
    assert "broken.jpg: could not be read" in ray_report.skipped[0].error
    assert stats["plan"]["num_actors"] == 2 and stats["plan"]["num_gpus"] == 0
    assert stats["embedded"] == N_IMAGES and stats["reused"] == 0


def test_same_vectors_and_aliases(single, on_ray):
    single_index, _ = single
    ray_index = ImageIndex.open(on_ray[0])  # what was saved, reopened
    expected, got = _vectors_by_path(single_index), _vectors_by_path(ray_index)
    assert set(got) == set(expected)
    for path, vector in expected.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-5, err_msg=path)
    assert len(ray_index) == N_IMAGES  # the copy is an alias, not a second vector
    duplicate = next(p for p in got if p.endswith(DUPLICATE))
    original = next(p for p in got if p.endswith(os.path.join("b", "02.png")))
    assert ray_index.record(duplicate).id == ray_index.record(original).id


def test_same_search_results(single, on_ray):
    single_index, _ = single
    ray_index = ImageIndex.open(on_ray[0])
    rng = np.random.default_rng(1)
    queries = np.concatenate(
        [rng.standard_normal((3, single_index.dim)).astype(np.float32), single_index.vectors()[:2]]
    )
    for expected, got in zip(single_index.search(queries, k=5), ray_index.search(queries, k=5), strict=False):
        assert [h.path for h in got.hits] == [h.path for h in expected.hits]
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in expected.hits], atol=1e-5)


def test_rerun_on_unchanged_folder_embeds_nothing(on_ray, image_dir, tiny_spec):
    path, first, _ = on_ray
    stats: dict = {}
    report = sync_folder_ray(ImageIndex.open(path), image_dir, address="auto", spec=tiny_spec, stats=stats)
    assert (report.added, report.updated, report.removed) == (0, 0, 0)
    assert report.total == first.total and report.skipped == first.skipped
    # The broken file's result is kept in the skipped shard: nothing went to Ray this time.
    assert stats["embedded"] == 0 and stats["plan"] is None and stats["reused"] == 1
    assert [p.name for p in (path / ".ray-shards").iterdir()] == ["shard-skipped.npz"]


def test_resumes_from_shards_of_an_interrupted_run(single, image_dir, tiny_spec, tmp_path, monkeypatch):
    """Shards left by a run whose driver died are merged without sending those images to Ray again."""
    single_index, _ = single
    shard_dir = tmp_path / "shards"
    records = sorted(single_index.records(), key=lambda r: r.path)
    header = {"spec": tiny_spec, "dim": single_index.dim, "precision": "fp32"}
    for number, chunk in enumerate([records[:10], records[10:]]):
        write_shard(
            shard_dir / f"shard-old-{number:06d}.npz",
            header=header,
            paths=[r.path for r in chunk],
            stats=[(r.size, r.mtime) for r in chunk],
            vectors=np.stack([single_index.vector(r.id) for r in chunk]),
            errors=[""] * len(chunk),
        )
    corrupt = str(image_dir / CORRUPT)
    write_shard(
        shard_dir / "shard-old-000002.npz",
        header=header,
        paths=[corrupt],
        stats=[(os.path.getsize(corrupt), os.path.getmtime(corrupt))],
        vectors=np.zeros((1, single_index.dim), np.float32),
        errors=["broken.jpg: not an image file"],
    )
    # A shard of another model is ignored.
    write_shard(
        shard_dir / "shard-other.npz",
        header={**header, "spec": "other:random"},
        paths=[corrupt],
        stats=[(0, 0.0)],
        vectors=np.zeros((1, single_index.dim), np.float32),
        errors=["x"],
    )

    def no_ray(self):
        raise AssertionError("everything was in the shards; Ray must not be started")

    monkeypatch.setattr("clipapp.index.distributed.LazySession.ray", no_ray)
    index = ImageIndex.open_or_create(tmp_path / "index", tiny_spec, single_index.dim)
    stats: dict = {}
    report = sync_folder_ray(index, image_dir, spec=tiny_spec, shard_dir=shard_dir, stats=stats)
    assert report.added == N_IMAGES + 1 and [s.path for s in report.skipped] == [corrupt]
    assert stats["reused"] == N_IMAGES + 1  # one file per distinct content plus the broken one
    expected = _vectors_by_path(single_index)
    for path, vector in _vectors_by_path(ImageIndex.open(tmp_path / "index")).items():
        np.testing.assert_allclose(vector, expected[path], atol=1e-6)
    assert sorted(p.name for p in shard_dir.iterdir()) == ["shard-other.npz", "shard-skipped.npz"]


def test_incremental_changes_and_index_folder_ray(ray_cluster, tiny_spec, tiny_service, tmp_path):
    """index_folder_ray (the CLI's call) creates the index, then picks up a changed, a new and a deleted file,
    like sync_folder does."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        Image.new("RGB", (30, 30), color).save(folder / f"{i}.png")
    first = index_folder_ray(folder, tmp_path / "index", spec=tiny_spec, address="auto")
    assert (first.added, first.total) == (3, 3)

    Image.new("RGB", (30, 30), (240, 240, 0)).save(folder / "0.png")  # changed (other size/mtime and bytes)
    os.utime(folder / "0.png", (1_000_000, 1_000_000))
    Image.new("RGB", (30, 30), (0, 0, 0)).save(folder / "new.png")
    (folder / "2.png").unlink()
    reference = ImageIndex.in_memory(tiny_service.spec, tiny_service.embed_dim)
    sync_folder(reference, folder, tiny_service)
    report = index_folder_ray(folder, tmp_path / "index", address="auto")  # spec: the index's own
    assert (report.added, report.updated, report.removed, report.total) == (1, 1, 1, 3)
    got, expected = _vectors_by_path(ImageIndex.open(tmp_path / "index")), _vectors_by_path(reference)
    assert set(got) == set(expected)
    for path in expected:
        np.testing.assert_allclose(got[path], expected[path], atol=1e-5)


def test_wrong_model_for_the_index_is_refused(on_ray, image_dir):
    with pytest.raises(ClipAppError, match="built with model"):
        sync_folder_ray(ImageIndex.open(on_ray[0]), image_dir, spec="clipapp-tiny:random")


def test_bad_arguments_are_clear_errors(tmp_path, tiny_spec):
    index = ImageIndex.in_memory(tiny_spec, 32)
    with pytest.raises(ClipAppError, match="precision"):
        sync_folder_ray(index, tmp_path, precision="auto")
    with pytest.raises(ClipAppError, match="batch_size"):
        sync_folder_ray(index, tmp_path, batch_size=0)
    with pytest.raises(ClipAppError, match="not a folder"):
        sync_folder_ray(index, tmp_path / "missing")


def test_missing_ray_says_how_to_install(monkeypatch, tmp_path, tiny_spec):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ClipAppError, match=r"pip install 'clipapp\[ray\]'"):
        sync_folder_ray(ImageIndex.in_memory(tiny_spec, 32), tmp_path)


class _FakeRay:
    def __init__(self, *nodes):
        self._nodes = [{"Alive": True, "Resources": n} for n in nodes]

    def nodes(self):
        return self._nodes


def test_cluster_plan_uses_gpus_when_there_are_any():
    plan = cluster_plan(_FakeRay({"CPU": 16, "GPU": 2}, {"CPU": 8}), num_actors=None, precision="fp16")
    assert plan == {"num_actors": 2, "num_gpus": 1, "num_cpus": 8, "device": "cuda"}
    with pytest.raises(ClipAppError, match="GPU"):
        cluster_plan(_FakeRay({"CPU": 16, "GPU": 2}), num_actors=3, precision="fp32")
    with pytest.raises(ClipAppError, match="int8"):
        cluster_plan(_FakeRay({"CPU": 16, "GPU": 1}), num_actors=None, precision="int8")


def test_cluster_plan_on_cpus_fits_every_node():
    assert cluster_plan(_FakeRay({"CPU": 2}), num_actors=2, precision="fp32") == {
        "num_actors": 2,
        "num_gpus": 0,
        "num_cpus": 1,
        "device": "cpu",
    }
    plan = cluster_plan(_FakeRay({"CPU": 8}, {"CPU": 4}), num_actors=2, precision="fp32")
    assert plan["num_cpus"] == 4  # 6 each would not fit the 4-CPU node
    assert cluster_plan(_FakeRay({"CPU": 32}), num_actors=None, precision="fp32")["num_actors"] == 8
    with pytest.raises(ClipAppError, match="fp16"):
        cluster_plan(_FakeRay({"CPU": 4}), num_actors=None, precision="fp16")
    with pytest.raises(ClipAppError, match="num_actors"):
        cluster_plan(_FakeRay({"CPU": 4}), num_actors=0, precision="fp32")


def test_worker_problems_stop_the_run_with_the_node_named(tmp_path, tiny_spec):
    encoder = RayEncoder(spec=tiny_spec, dim=32, num_actors=None, precision="fp32", shard_dir=tmp_path, session=None)
    here = tmp_path / "here.png"
    here.write_bytes(b"x")
    block = {
        "path": np.array([str(here)], dtype=object),
        "vector": np.zeros((1, 32), np.float32),
        "status": np.array(["missing"], dtype=object),
        "error": np.array([""], dtype=object),
        "node": np.array(["worker-7"], dtype=object),
    }
    with pytest.raises(ClipAppError, match="worker-7 cannot see .*same path on every node"):
        encoder._check_block(block, {str(here): (1, 0.0)})
    block["status"][0], block["error"][0] = "fatal", "cannot load model x: Weights file not found: /w"
    with pytest.raises(ClipAppError, match="worker-7: cannot load model"):
        encoder._check_block(block, {str(here): (1, 0.0)})
    here.unlink()  # gone here too: an ordinary skipped file, not a cluster problem
    block["status"][0] = "missing"
    assert encoder._check_block(block, {str(here): (1, 0.0)})[0][1] is None


def test_unreachable_cluster_address_fails_fast():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # (ray.init itself would retry such an address for minutes; this check answers at once)
    with pytest.raises(ClipAppError, match="Cannot reach the Ray cluster"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ClipAppError, match="Cannot reach the Ray cluster"):
        _check_reachable(f"ray://127.0.0.1:{port}")
    with pytest.raises(ClipAppError, match="not understood"):
        _check_reachable("headnode")


def test_auto_ignores_a_stale_cluster_address(monkeypatch):
    """ "auto" starts a local Ray when the cluster last started here is gone, instead of retrying it for minutes."""
    import ray._private.services as services

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: f"127.0.0.1:{port}")
    assert _auto_address() is None
    with socket.socket() as server:  # the same address answering: connect to it
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: live)
        assert _auto_address() == live
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")  # named by the user: used as given
    assert _auto_address() == "head:6379"


def test_embed_actor_in_process(tiny_spec, tiny_service, tmp_path, photos):
    """The actor's own logic, without Ray: vectors as the service's, bad and missing files flagged per row, and a
    model that cannot load reported as 'fatal' rows (not an exception that Ray would retry)."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    paths = [str(photos[0]), str(broken), str(tmp_path / "gone.png"), str(photos[1])]
    out = EmbedActor(spec=tiny_spec, dim=32, precision="fp32", device="cpu")({"path": np.array(paths, dtype=object)})
    assert list(out["status"]) == ["ok", "error", "missing", "ok"]
    np.testing.assert_allclose(out["vector"][[0, 3]], tiny_service.encode_images([photos[0], photos[1]]), atol=1e-5)
    assert "broken.png" in out["error"][1]
    out = EmbedActor(spec="clipapp-tiny:/nowhere/tiny.safetensors", dim=32)({"path": np.array(paths[:1], dtype=object)})
    assert list(out["status"]) == ["fatal"] and "Weights file not found" in out["error"][0]
    out = EmbedActor(spec=tiny_spec, dim=64)({"path": np.array(paths[:1], dtype=object)})  # wrong size for the index
    assert list(out["status"]) == ["fatal"] and "32-d" in out["error"][0]


def test_cli_index_json_is_the_same_report_with_and_without_ray(ray_cluster, tiny_spec, tmp_path, capsys):
    """`clipapp index --json` prints SyncReport.to_dict() whichever path indexed: no reshaping for --ray."""
    from clipapp.app.cli import main
    from clipapp.index import SyncReport

    folder = tmp_path / "images"
    folder.mkdir()
    for i, color in enumerate([(200, 10, 10), (10, 200, 10)]):
        Image.new("RGB", (30, 30), color).save(folder / f"{i}.png")
    shutil.copyfile(folder / "0.png", folder / DUPLICATE)
    (folder / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    reports = []
    for name, ray in (("local", []), ("ray", ["--ray", "auto"])):
        argv = ["index", str(folder), "--index", str(tmp_path / name), "--model", tiny_spec, "--precision", "fp32"]
        assert main([*argv, *ray, "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    local, on_ray = reports
    assert list(on_ray) == list(local) == list(SyncReport().to_dict())
    assert (on_ray["added"], on_ray["total"], on_ray["skipped"]) == (3, 3, [str(folder / CORRUPT)])
    assert on_ray["errors"][str(folder / CORRUPT)]
    assert on_ray == local  # the same counts, the same skipped files, the same reasons
