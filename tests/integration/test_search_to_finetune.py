"""From search results to a classifier, through gradio_client: select results of the examples index, collect two
classes, fine-tune on them, then /classify in the same session uses the adapter. Also the Search tab's tag filter
(and /v1/search's), and that a page can name only images of the index, never another server file."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from clipapp.app.picks import add_picks, labelled_picks, parse_picks, picks_text
from clipapp.app.sessions import EXAMPLES
from clipapp.errors import ClipAppError
from tests.support.serving import serving

FAST = {"mode": "head", "epochs": 3}  # a few epochs of the head: the loop, not the accuracy, is under test


@pytest.fixture(scope="module")
def served(tiny_service, tmp_path_factory):
    """The server (build_server) with a context of this module's own (it tags its examples index)."""
    from clipapp.app.ui.common import AppContext

    ctx = AppContext(service=tiny_service, state_dir=tmp_path_factory.mktemp("loop") / "state")
    with serving(ctx) as url:
        yield url, ctx


def _all_examples(client) -> list[str]:
    hits = client.predict(source_=EXAMPLES, query_="a photo", k_=100, api_name="/search_text")["results"]
    return [hit["image"] for hit in hits]


@pytest.mark.server
def test_every_optional_parameter_has_a_default(served):
    client = Client(served[0], verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    required = {
        name: [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
        for name, info in api.items()
    }
    assert required["/add_to_class"] == ["class_name_"]
    assert required["/finetune_selection"] == []
    assert "tag_" in [p["parameter_name"] for p in api["/search_text"]["parameters"]]


@pytest.mark.server
def test_search_select_two_classes_finetune_then_classify_with_the_adapter(served):
    client = Client(served[0], verbose=False)
    found = _all_examples(client)
    clothes = [p for p in found if "/fashion/" in p]
    photos = [p for p in found if "/photos/" in p]
    assert len(clothes) >= 4 and len(photos) >= 4
    selection, table, emptied = client.predict("clothing", "\n".join(clothes), "", EXAMPLES, api_name="/add_to_class")
    assert emptied == "" and f"| clothing | {len(clothes)} |" in table
    selection, table, _ = client.predict("photo", "\n".join(photos), selection, EXAMPLES, api_name="/add_to_class")
    assert parse_picks(selection) == {"clothing": clothes, "photo": photos}
    assert f"| photo | {len(photos)} |" in table

    summary, _curves, _confusion, report, files = client.predict(
        selection_=selection, source_=EXAMPLES, **FAST, api_name="/finetune_selection"
    )
    assert report["class_names"] == ["clothing", "photo"]
    assert report["adapter"] in summary and "is now used by the Zero-shot tab" in summary
    assert any(str(f).endswith(".safetensors") for f in files)

    # The same session classifies with its adapter: the labels typed are ignored, the adapter's classes answer.
    result = client.predict([handle_file(photos[0]), handle_file(clothes[0])], "cat, dog", api_name="/classify")
    for item in result["results"]:
        assert {t["label"] for t in item["top"]} == {"clothing", "photo"}
    # Another session has no adapter: plain zero-shot on its labels.
    other = Client(served[0], verbose=False).predict([handle_file(photos[0])], "cat, dog", api_name="/classify")
    assert {t["label"] for t in other["results"][0]["top"]} == {"cat", "dog"}


@pytest.mark.server
def test_a_path_not_in_the_index_is_refused(served):
    client = Client(served[0], verbose=False)
    found = _all_examples(client)
    inside = found[0]
    folder = Path(inside).parent
    sneaky = ["/etc/hostname", str(folder / ".." / folder.name / Path(inside).name)]  # the second: an alias
    for path in sneaky:
        with pytest.raises(AppError, match="Not images of the selected index"):
            client.predict("x", path, "", EXAMPLES, api_name="/add_to_class")
        # Typed straight into the fine-tune endpoint, past "Add to class": refused before any file is read.
        with pytest.raises(AppError, match="Not images of the selected index"):
            client.predict(selection_=f"a={inside}\nb={path}", **FAST, api_name="/finetune_selection")
    with pytest.raises(AppError, match="No classes collected"):
        client.predict(selection_="", api_name="/finetune_selection")


@pytest.mark.server
def test_selection_rules(served):
    _, ctx = served
    with ctx.sessions.searchable(EXAMPLES, "") as index:
        paths = sorted(record.path for record in index.records())
        a, b, c = paths[:3]
        classes = add_picks({}, "first", [a, b], index)
        classes = add_picks(classes, " second ", [b, c, c], index)
        assert classes == {"first": [a], "second": [b, c]}  # b moved: the latest choice wins
        assert parse_picks(picks_text(classes)) == classes
        assert parse_picks('{"first": ["%s"], "second": ["%s"]}' % (a, b)) == {"first": [a], "second": [b]}
        data = labelled_picks(picks_text(classes), index)
        assert data.class_names == ["first", "second"] and list(data.targets) == [0, 1, 1]
        with pytest.raises(ClipAppError, match="class name"):
            add_picks({}, "  ", [a], index)
        with pytest.raises(ClipAppError, match="Select some"):
            add_picks({}, "x", [], index)
        with pytest.raises(ClipAppError, match="at least 2 classes"):
            labelled_picks({"only": [a, b]}, index)


@pytest.mark.server
def test_tag_filter_in_the_search_tab_and_v1_search(served):
    from clipapp.app.http_api import create_app
    from clipapp.app.ui.search_tab import tag_choices

    url, ctx = served
    client = Client(url, verbose=False)
    shoes = [p for p in _all_examples(client) if Path(p).stem in ("sneaker", "sandal", "ankle_boot")]
    assert len(shoes) == 3
    with ctx.sessions.searchable(EXAMPLES, "") as index:
        index.set_tags({p: [("shoe", 0.9)] for p in shoes})
        index.save()
        assert tag_choices(index.tag_counts()) == [("(any image)", ""), ("shoe (3)", "shoe")]
    tagged = client.predict(source_=EXAMPLES, query_="a cat", k_=10, tag_="shoe", api_name="/search_text")
    assert sorted(hit["image"] for hit in tagged["results"]) == sorted(shoes)
    untagged = client.predict(source_=EXAMPLES, query_="a cat", k_=10, api_name="/search_text")
    assert len(untagged["results"]) == 10
    by_image = client.predict(EXAMPLES, handle_file(shoes[0]), 10, -1, "shoe", api_name="/search_image")
    assert [hit["image"] for hit in by_image["results"]][0] == shoes[0] and len(by_image["results"]) == 3

    api = TestClient(create_app(ctx.sessions))
    answer = api.post("/v1/search", data={"query": "a cat", "k": 10, "tag": "shoe"})
    assert answer.status_code == 200, answer.text
    assert sorted(hit["path"] for hit in answer.json()["results"]) == sorted(shoes)
    assert len(api.post("/v1/search", data={"query": "a cat", "k": 10}).json()["results"]) == 10
    assert api.post("/v1/search", data={"query": "a cat", "tag": "no-such-tag"}).json()["results"] == []


def test_image_upload_fields_accept_heic_and_raw(tiny_service, tmp_path):
    import gradio as gr

    from clipapp.app.ui import build_app
    from clipapp.app.ui.common import AppContext

    demo = build_app(AppContext(service=tiny_service, state_dir=tmp_path))
    fields = [
        block
        for block in demo.blocks.values()
        if isinstance(block, gr.File) and block.interactive is not False and block.file_types != [".zip"]
    ]
    assert len(fields) >= 4  # zero-shot images, search uploads, search by image, per-class rows
    for field in fields:
        assert {".heic", ".heif", ".dng", ".jpg", ".png"} <= set(field.file_types), field.label
