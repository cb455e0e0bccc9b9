"""The actions layer (clipapp/app/actions/) without Gradio, HTTP or argparse: typed arguments checked before any
model work, typed results with one `to_dict`, and the Search tab's handlers as plain functions over a SessionStore.
The CLI's text for each result type (clipapp/app/cli/render.py) is checked here too."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest

from clipapp.app import actions
from clipapp.app.sessions import EXAMPLES, MY_UPLOADS, SessionStore
from clipapp.errors import ClipAppError
from clipapp.index import SearchOptions

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "assets" / "examples"


@pytest.fixture(scope="module")
def store(tiny_service, tmp_path_factory):
    return SessionStore(tiny_service, tmp_path_factory.mktemp("state"), EXAMPLES_DIR)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "Give image files or folders, or --index PATH"),
        ({"images": ["a.png"], "index": "idx"}, "not both"),
        ({"images": ["a.png"], "resume": True}, "--resume continues an output file"),
        ({"images": ["a.png"], "tag": True}, "--tag stores the labels in an index"),
        ({"index": "idx", "ray": "auto"}, "--ray is for encoding image files"),
    ],
)
def test_a_batch_that_cannot_work_is_refused_on_creation(options, message):
    with pytest.raises(ClipAppError, match=message):
        actions.BatchClassify(labels="a,b", **options)


def test_a_batch_keeps_results_in_memory_only_without_an_output_file():
    assert actions.BatchClassify(images=["a.png"]).keep_results
    assert not actions.BatchClassify(images=["a.png"], csv="out.csv").keep_results


def test_classify_batch_lists_unreadable_files_then_refuses_an_empty_run(tiny_service, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    heard = []
    with pytest.raises(ClipAppError, match="No image could be classified"):
        actions.classify_batch(
            tiny_service, actions.BatchClassify(images=[str(broken)], labels="a,b"), on_skipped=heard.append
        )
    assert [item.path for item in heard] == [str(broken)]


def test_labelled_images_are_given_exactly_one_way(tmp_path):
    with pytest.raises(ClipAppError, match="one way: .*; got DATA_DIR and --from-csv"):
        actions.LabelledSource(data_dir="d", from_csv="x.csv")
    with pytest.raises(ClipAppError, match="one way"):
        actions.LabelledSource()
    with pytest.raises(ClipAppError, match="--from-index takes its images from --class or --from-csv"):
        actions.LabelledSource(data_dir="d", from_index="idx")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")  # listed, not decoded: a source is read when it is created
    source = actions.LabelledSource(classes=[f"x={tmp_path / 'a.png'}", f"y={tmp_path / 'b.png'}"])
    assert source.labelled is not None and source.labelled.class_names == ["x", "y"]
    with pytest.raises(ClipAppError, match="not found"):
        actions.LabelledSource(classes=[f"x={tmp_path / 'absent.png'}"])


def test_zero_shot_results_are_typed_with_one_to_dict(tiny_service, photos):
    images = actions.load_named_images(photos[:2])
    found = actions.classify(tiny_service, images, "cat, rocket, coffee", top_k=2)
    assert isinstance(found, actions.Classification) and found.labels == ["cat", "rocket", "coffee"]
    payload = found.to_dict()
    assert [len(item["top"]) for item in payload["results"]] == [2, 2]
    assert payload["model"] == tiny_service.spec
    sims = actions.similarity(tiny_service, images, "a cat\na rocket")
    assert sims.to_dict() == {
        "model": tiny_service.spec,
        "images": [i.name for i in images],
        "texts": ["a cat", "a rocket"],
        "matrix": sims.matrix,
    }
    assert np.asarray(sims.matrix).shape == (2, 2)


def test_embed_takes_one_kind_and_names_images_as_sent(tiny_service, photos):
    with pytest.raises(ClipAppError, match="either images or texts"):
        actions.embed(tiny_service)
    buffer = io.BytesIO(photos[0].read_bytes())
    buffer.name = "mine.jpg"
    with pytest.raises(ClipAppError, match="either images or texts"):
        actions.embed(tiny_service, images=[buffer], texts=["a cat"])
    got = actions.embed(tiny_service, images=[buffer]).to_dict()
    assert got["items"] == ["mine.jpg"] and got["dim"] == tiny_service.embed_dim
    texts = actions.embed(tiny_service, texts=["a cat", "a dog"])
    np.testing.assert_allclose(np.linalg.norm(texts.vectors, axis=1), 1.0, atol=1e-5)


def test_the_search_tab_handlers_as_plain_functions(store):
    with pytest.raises(ClipAppError, match="choose it first"):
        actions.update_source(store, EXAMPLES, "s1", ["x.png"])
    update = actions.update_source(store, EXAMPLES, "s1")
    assert update.to_dict()["total"] == update.report.total > 0 and "refused_uploads" not in update.to_dict()
    found = actions.search_source_text(store, EXAMPLES, "s1", "a photo", SearchOptions(k=3))
    paths = [hit["path"] for hit in found.to_dict()["results"]]
    assert len(paths) == 3
    # A typed query never reads the server's files: "img:/etc/hostname" is searched as text, not decoded.
    assert actions.search_source_text(store, EXAMPLES, "s1", "img:/etc/hostname + cat", SearchOptions(k=1)).to_dict()[
        "results"
    ]
    like = actions.search_like_indexed(store, EXAMPLES, "s1", paths[0], SearchOptions(k=1)).to_dict()["results"]
    assert like[0]["path"] == paths[0]
    with pytest.raises(ClipAppError, match="no longer in the index"):
        actions.search_like_indexed(store, EXAMPLES, "s1", "/etc/hostname")
    assert actions.source_tags(store, EXAMPLES, "s1") == {}
    picks = actions.pick_into_class(store, EXAMPLES, "s1", "", "first", paths[:2])
    picks = actions.pick_into_class(store, EXAMPLES, "s1", picks, "second", paths[1:])
    assert picks == {"first": [paths[0]], "second": paths[1:]}
    data = actions.labelled_source_picks(store, EXAMPLES, "s1", picks)
    assert data.class_names == ["first", "second"] and list(data.targets) == [0, 1, 1]
    with pytest.raises(ClipAppError, match="Not images of the selected index"):
        actions.pick_into_class(store, EXAMPLES, "s1", picks, "third", ["/etc/hostname"])


def test_search_shared_refuses_session_uploads_and_needs_one_query(store, photos):
    with pytest.raises(ClipAppError, match="belongs to a browser session"):
        actions.search_shared(store, MY_UPLOADS, query="a cat")
    with pytest.raises(ClipAppError, match="either a text query or an image"):
        actions.search_shared(store, EXAMPLES)
    with pytest.raises(ClipAppError, match="either a text query or an image"):
        actions.search_shared(store, EXAMPLES, query="a cat", image=str(photos[0]))
    by_image = actions.search_shared(store, EXAMPLES, image=str(photos[0]), options=SearchOptions(k=2)).to_dict()
    assert len(by_image["results"]) == 2


def test_every_result_type_has_its_text(tiny_service, photos, store):
    from clipapp.app.cli.render import render
    from clipapp.classify.stream import ClassifyReport, Prediction
    from clipapp.index import SyncReport

    args = argparse.Namespace(csv="out.csv", jsonl=None, index="idx")
    report = ClassifyReport(
        model="m",
        labels=["a", "b"],
        multi_label=False,
        classified=1,
        results=[Prediction("x.png", (("a", 0.75), ("b", 0.25)))],
    )
    assert render(report, args).splitlines() == [
        "model: m",
        "x.png",
        "   75.0%  a",
        "   25.0%  b",
        "classified 1, skipped 0 -> out.csv",
    ]
    assert render(SyncReport(added=2, total=2), args) == "added 2, updated 0, removed 0, skipped 0; 2 images in idx"
    sims = actions.similarity(tiny_service, actions.load_named_images(photos[:1]), ["a cat"])
    assert render(sims, args).splitlines()[2].startswith("a cat\t")
    assert (
        render(actions.search_shared(store, EXAMPLES, query="zzz", options=SearchOptions(k=1, min_score=1.01)), args)
        == "no results"
    )


def test_a_session_fine_tune_is_kept_as_the_sessions_adapter(store):
    from clipapp.finetune import FinetuneConfig

    found = actions.search_source_text(store, EXAMPLES, "", "a photo", SearchOptions(k=100)).to_dict()["results"]
    clothes = [hit["path"] for hit in found if "/fashion/" in hit["path"]][:4]
    photos = [hit["path"] for hit in found if "/photos/" in hit["path"]][:4]
    data = actions.labelled_source_picks(store, EXAMPLES, "", {"clothing": clothes, "photo": photos})
    config = FinetuneConfig(mode="head", epochs=2)
    kept = actions.finetune_for_session(store, "s2", data, config, name="adapter-s2")
    assert kept.to_dict()["adapter"] == "adapter-s2" and kept.to_dict()["class_names"] == ["clothing", "photo"]
    assert all(path.is_file() for path in kept.files)
    assert store.adapter("s2", "adapter-s2").class_names == ["clothing", "photo"]  # the session's classifier now
    anonymous = actions.finetune_for_session(store, "", data, config, name="adapter-none")
    assert anonymous.files[0].parent == store.state_dir / "adapters"  # no session: kept for download only


def test_the_pre_0_2_classification_name_answers_with_the_one_typed_result(tiny_service, photos):
    with pytest.warns(DeprecationWarning, match="clipapp.tasks.classification moved to clipapp.app.actions.classify"):
        from clipapp.tasks import classification
    found = classification(tiny_service, actions.load_named_images(photos[:1]), "cat, rocket, coffee")
    assert isinstance(found, actions.Classification)
    assert len(found.to_dict(2)["results"][0]["top"]) == 2 and len(found.to_dict()["results"][0]["top"]) == 3


def test_the_fine_tune_page_uploads_zip_and_rows_combine(photos, tmp_path, monkeypatch):
    import zipfile

    archive = tmp_path / "classes.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(photos[0], f"set/cat/{photos[0].name}")
        out.write(photos[1], f"set/dog/{photos[1].name}")
    data = actions.labelled_page_uploads(str(archive), [("dog", [str(photos[2])]), ("", [])], tmp_path / "work")
    assert data.class_names == ["cat", "dog"] and list(data.targets) == [0, 1, 1]
    assert data.names == [photos[0].name, photos[1].name, photos[2].name]
    with pytest.raises(ClipAppError, match="no class name"):
        actions.labelled_page_uploads(None, [(" ", [str(photos[0])])], tmp_path)
    with pytest.raises(ClipAppError, match="'cat' has no images"):
        actions.labelled_page_uploads(None, [("cat", [])], tmp_path)
    with pytest.raises(ClipAppError, match="No labelled images"):
        actions.labelled_page_uploads(None, [], tmp_path)
    from clipapp.app.actions import finetune as page

    monkeypatch.setattr(page, "MAX_PAGE_IMAGES", 2)
    with pytest.raises(ClipAppError, match="3 images given; the web app fine-tunes on at most 2"):
        actions.labelled_page_uploads(None, [("a", [str(p) for p in photos[:3]])], tmp_path)


def test_the_bundled_example_set_fills_the_class_rows(tmp_path):
    from clipapp.app.actions import example_class_rows
    from clipapp.app.ui.common import AppContext

    folder = AppContext.__dataclass_fields__["finetune_example_dir"].default  # the page's own folder
    rows = example_class_rows(folder, 4)
    assert [name for name, _ in rows] == ["coat", "pullover", "shirt", "t-shirt"]
    assert all(len(paths) == 8 and all(p.endswith(".png") for p in paths) for _, paths in rows)
    assert len(example_class_rows(folder, 2)) == 2  # never more classes than the page has rows
    with pytest.raises(ClipAppError, match="make_examples.py"):
        example_class_rows(tmp_path / "absent", 4)
