"""Tagging a selection by hand (clipapp/app/actions/tags.py, ImageIndex.add_tag): the tag joins the image's other
tags, aliases are one image, the tag filter then finds exactly the tagged images, and bad input changes nothing."""

from __future__ import annotations

import pytest

from clipapp.app.actions.tags import tag_images, tag_in_index
from clipapp.errors import ClipAppError
from clipapp.index import FileInfo, ImageIndex, SearchFilter
from tests.support.fake_index import DIM, SPEC, random_unit


@pytest.fixture
def index(tmp_path):
    vectors = random_unit(6, DIM, seed=2)
    infos = [FileInfo(f"/p/{i}.jpg", 1, 0.0, f"h{i}") for i in range(6)]
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    index.add_items(vectors, infos)
    index.add_alias(FileInfo("/p/copy-of-1.jpg", 1, 0.0, "h1"))
    index.set_tags({"/p/0.jpg": [("cat", 0.9)]})  # as classify --tag writes them
    index.save()
    yield index
    index.close()


def _tagged(index, tag: str) -> list[int]:
    hits = index.search(random_unit(1, DIM, seed=3)[0], k=6, filter=SearchFilter(tag=tag))[0].hits
    return sorted(hit.id for hit in hits)


def test_a_selection_gets_the_tag_beside_its_other_tags(index):
    report = tag_in_index(index, "/p/0.jpg\n/p/1.jpg\n/p/copy-of-1.jpg\n\n", "  summer   trip ")
    assert report.to_dict() == {"tag": "summer trip", "tagged": 2, "total": 2}
    assert _tagged(index, "summer trip") == [0, 1]
    assert dict(index.tags("/p/0.jpg")) == {"cat": 0.9, "summer trip": 1.0}  # classify's tag stays
    again = tag_in_index(index, ["/p/4.jpg", "/p/0.jpg"], "summer trip")
    assert (again.tagged, again.total) == (2, 3) and _tagged(index, "summer trip") == [0, 1, 4]
    assert _tagged(index, "cat") == [0]


def test_tags_are_committed_for_other_readers(index):
    tag_in_index(index, ["/p/2.jpg"], "best")
    with ImageIndex.open(index.path) as other:
        assert other.tag_counts()["best"] == 1


@pytest.mark.parametrize(
    "paths, tag, message",
    [
        (["/p/1.jpg", "/p/missing.jpg"], "x", "Cannot tag /p/missing.jpg: it is not in the index"),
        ("  \n", "x", "No images selected"),
        (["/p/1.jpg"], " ", "Give the tag a name"),
        (["/p/1.jpg"], "a, b", "has a comma"),
        (["/p/1.jpg"], "x" * 101, "at most 100"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(index, paths, tag, message):
    with pytest.raises(ClipAppError, match=message):
        tag_in_index(index, paths, tag)
    index.close()
    with ImageIndex.open(index.path) as reopened:
        assert reopened.tag_counts() == {"cat": 1}


def test_tag_images_by_index_path(index, tmp_path):
    folder = index.path
    index.close()
    assert tag_images(folder, ["/p/3.jpg"], "keep").tagged == 1
    with pytest.raises(ClipAppError, match="No index at"):
        tag_images(tmp_path / "none", ["/p/3.jpg"], "keep")
    with ImageIndex.open(folder) as reopened:
        assert reopened.tag_counts() == {"cat": 1, "keep": 1}
