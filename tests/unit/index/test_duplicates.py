"""Near-duplicate groups (clipapp/index/duplicates.py) and moving copies aside (clipapp/index/moves.py), on real image
files in an in-memory index whose vectors are chosen here (the model's part is measured in bench_duplicates.py)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from clipapp.errors import ClipAppError
from clipapp.index import FileInfo, ImageIndex
from clipapp.index.duplicates import DuplicateImage, components, find_duplicates, keeper_order
from clipapp.index.moves import move_files, undo_moves

DIM = 16


def _unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def library(tmp_path, photos):
    """astronaut.jpg + a half-size copy + a brighter copy (one picture), camera.jpg (alone), a byte copy of
    camera, and cat.jpg whose vector is made to look like astronaut's (the hash must keep it apart)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    by_name = {p.stem: p for p in photos}
    astronaut = Image.open(by_name["astronaut"]).convert("RGB")
    astronaut.save(folder / "astronaut.jpg", quality=95)
    astronaut.resize((astronaut.width // 2, astronaut.height // 2)).save(folder / "astronaut_small.jpg", quality=60)
    ImageEnhance.Brightness(astronaut).enhance(1.3).save(folder / "astronaut_bright.jpg", quality=95)
    Image.open(by_name["camera"]).convert("RGB").save(folder / "camera.jpg")
    (folder / "camera_copy.jpg").write_bytes((folder / "camera.jpg").read_bytes())
    Image.open(by_name["cat"]).convert("RGB").save(folder / "cat.jpg")
    rng = np.random.default_rng(0)
    base, other = _unit(rng.standard_normal(DIM)), _unit(rng.standard_normal(DIM))
    near = lambda v, s: _unit(v + s * rng.standard_normal(DIM))  # noqa: E731
    vectors = {"astronaut": base, "astronaut_small": near(base, 0.05), "astronaut_bright": near(base, 0.05),
               "camera": other, "cat": near(base, 0.05)}  # fmt: skip
    index = ImageIndex.in_memory("test", DIM)
    names = list(vectors)
    infos = [FileInfo(str(folder / f"{n}.jpg"), os.path.getsize(folder / f"{n}.jpg"), 0.0, n) for n in names]
    index.add_items(np.stack([vectors[n] for n in names]), infos)
    index.add_alias(FileInfo(str(folder / "camera_copy.jpg"), 1, 0.0, "camera"))
    return index, folder


def test_groups_copies_and_keeps_the_lookalike_apart(library):
    index, folder = library
    report = find_duplicates(index, threshold=0.95)
    groups = {frozenset(os.path.basename(p) for p in g.to_dict()["paths"]) for g in report.groups}
    assert groups == {
        frozenset({"astronaut.jpg", "astronaut_small.jpg", "astronaut_bright.jpg"}),
        frozenset({"camera.jpg", "camera_copy.jpg"}),
    }
    assert report.rejected >= 1  # cat: near in the embedding, refused by the perceptual hash
    astronaut = next(g for g in report.groups if len(g.images) == 3)
    assert os.path.basename(astronaut.keep) in {"astronaut.jpg", "astronaut_bright.jpg"}  # full size, not the half
    assert astronaut.to_dict()["keep"] == astronaut.to_dict()["paths"][0]


def test_without_the_hash_the_lookalike_joins(library):
    index, _ = library
    report = find_duplicates(index, threshold=0.95, hash_distance=None)
    assert any("cat.jpg" in " ".join(g.to_dict()["paths"]) for g in report.groups)


def test_threshold_is_checked(library):
    with pytest.raises(ClipAppError, match="threshold"):
        find_duplicates(library[0], threshold=1.5)


def test_components_join_chains_and_keep_singles():
    pairs = np.array([[1, 2], [2, 3], [7, 9]])
    found = sorted(sorted(c.tolist()) for c in components(pairs, np.array([5])))
    assert found == [[1, 2, 3], [5], [7, 9]]
    assert components(np.zeros((0, 2), dtype=np.int64), np.array([], dtype=np.int64)) == []


def test_keeper_is_largest_then_biggest_file_then_earliest():
    def im(path, w, size, date):
        return DuplicateImage(path, size, w, w, date)

    order = keeper_order([im("a", 100, 5, "2020"), im("b", 200, 1, "2021"), im("c", 200, 9, "2022"),
                          im("d", 200, 9, "2019")])  # fmt: skip
    assert [i.path for i in order] == ["d", "c", "b", "a"]


def test_move_and_undo_round_trip(library, tmp_path):
    index, folder = library
    report = find_duplicates(index, threshold=0.95)
    others = [p for g in report.groups for p in g.others]
    before = {p: open(p, "rb").read() for p in others}
    moved = move_files(others, tmp_path / "aside")
    assert len(moved.moved) == len(others) and not any(os.path.exists(p) for p in others)
    assert all(os.path.exists(g.keep) for g in report.groups)  # keepers never move
    rows = list(csv.reader(open(moved.log)))
    assert rows[0] == ["original", "moved"] and len(rows) == len(others) + 1
    assert find_duplicates(index, threshold=0.95).groups == ()  # the moved files are no longer members
    restored = undo_moves(moved.log)
    assert len(restored.moved) == len(others)
    assert {p: open(p, "rb").read() for p in others} == before
    assert undo_moves(moved.log).moved == ()  # a second undo moves nothing


def test_undo_refuses_to_move_outside_the_log_folder_or_overwrite(tmp_path):
    aside = tmp_path / "aside"
    aside.mkdir()
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"not yours")
    inside = aside / "x.jpg"
    inside.write_bytes(b"moved")
    taken = tmp_path / "taken.jpg"
    taken.write_bytes(b"new file")
    log = aside / "undo.csv"
    with open(log, "w", newline="") as handle:
        csv.writer(handle).writerows([("original", "moved"), (str(tmp_path / "stolen.jpg"), str(outside)),
                                      (str(taken), str(inside))])  # fmt: skip
    report = undo_moves(log)
    assert report.moved == () and len(report.skipped) == 2
    assert outside.read_bytes() == b"not yours" and taken.read_bytes() == b"new file" and inside.exists()


def test_move_never_overwrites_and_refuses_a_file_as_folder(tmp_path):
    source = tmp_path / "a.jpg"
    source.write_bytes(b"a")
    aside = tmp_path / "aside"
    target = aside / source.relative_to(source.anchor)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"already there")
    report = move_files([str(source)], aside)
    assert report.moved == () and source.exists() and target.read_bytes() == b"already there"
    with pytest.raises(ClipAppError, match="is a file"):
        move_files([str(source)], source)
    with pytest.raises(ClipAppError, match="not an undo log"):
        undo_moves(source)
