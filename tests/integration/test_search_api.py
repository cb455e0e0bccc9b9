"""The Search tab's API through gradio_client: examples out of the box, uploads per session, image search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from clipapp.index import Hit, SearchResult
from tests.support.paths import EXAMPLES_DIR
from tests.support.serving import serving


def test_api_names(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/index_images", "/search_text", "/search_image"} <= names


def test_examples_index_works_on_first_search(client):
    result = client.predict("examples", "a cat", "simple", 5, -1, api_name="/search_text")
    hits = result["results"]
    assert len(hits) == 5
    assert all(Path(hit["image"]).resolve().is_relative_to(EXAMPLES_DIR) for hit in hits)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_the_page_gallery_is_drawn_from_the_json():
    from clipapp.app.ui.search_tab import gallery_of

    result = SearchResult((Hit(3, "/x/cat.jpg", 0.31234, ("/x/cat-copy.jpg",)), Hit(5, "/x/dog.jpg", 0.2)))
    assert result.for_gradio()["results"][0] == {
        "id": 3,
        "image": "/x/cat.jpg",
        "score": 0.31234,
        "aliases": ["/x/cat-copy.jpg"],
    }
    assert gallery_of(result.for_gradio()) == [("/x/cat.jpg", "0.312  cat.jpg"), ("/x/dog.jpg", "0.200  dog.jpg")]
    assert gallery_of(None) == []


@pytest.mark.server
def test_gradio_client_still_takes_a_path_key_for_a_file(tmp_path):
    """Why the web app's hits name their file "image" (SearchResult.for_gradio): gradio_client downloads any JSON
    object with a "path" and hands back the local copy in its place, so the hit's score, id and aliases are lost.
    If this starts failing, gradio_client stopped doing that and the rename can go."""
    import gradio as gr

    picture = tmp_path / "cat.jpg"
    picture.write_bytes(b"not even an image: only the file matters here")
    result = SearchResult((Hit(1, str(picture), 0.5),))
    with gr.Blocks() as demo:
        query, out = gr.Textbox(), gr.JSON()
        gr.Button("a").click(lambda _: result.to_dict(), query, out, api_name="with_path")
        gr.Button("b").click(lambda _: result.for_gradio(), query, out, api_name="with_image")
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, allowed_paths=[str(tmp_path)]
    )
    try:
        client = Client(url, verbose=False)
        mangled = client.predict("x", api_name="/with_path")["results"][0]
        assert isinstance(mangled, str) and Path(mangled).read_bytes() == picture.read_bytes()  # a file, no score
        assert client.predict("x", api_name="/with_image") == result.for_gradio()
    finally:
        demo.close()


@pytest.mark.server
def test_cli_v1_and_gradio_give_the_same_hits(tiny_service, tiny_spec, photos, tmp_path, capsys):
    from clipapp.app.cli import main
    from clipapp.app.ui.common import AppContext

    folder = tmp_path / "pics"
    folder.mkdir()
    for photo in photos[:4]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(photos[0], folder / "copy.jpg")  # the same bytes again: an alias of one hit, not a hit of its own
    source = str(folder)
    ctx = AppContext(service=tiny_service, state_dir=tmp_path / "state", allowed_roots=(folder,))
    with serving(ctx) as url:
        via_gradio = Client(url, verbose=False).predict(source, "a cat", "simple", 10, -1, api_name="/search_text")
        via_http = requests.post(
            url + "v1/search", data={"source": source, "query": "a cat", "k": 10, "templates": "simple"}
        ).json()
    _, index_path = ctx.sessions.folder_and_index_path(source, "")
    assert (
        main(["search", "--index", str(index_path), "--text", "a cat", "-k", "10", "--model", tiny_spec, "--json"]) == 0
    )
    via_cli = json.loads(capsys.readouterr().out)

    gradio_hits = [
        {("path" if key == "image" else key): value for key, value in hit.items()} for hit in via_gradio["results"]
    ]
    for hits in (gradio_hits, via_http["results"], via_cli["results"]):
        assert len(hits) == 4 and all(set(hit) == {"id", "path", "score", "aliases"} for hit in hits)
        assert [{k: v for k, v in hit.items() if k != "score"} for hit in hits] == [
            {k: v for k, v in hit.items() if k != "score"} for hit in via_cli["results"]
        ]
        assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in via_cli["results"]], abs=1e-5)
    (with_alias,) = [hit for hit in via_cli["results"] if hit["aliases"]]
    assert {Path(with_alias["path"]).name, *(Path(p).name for p in with_alias["aliases"])} == {
        photos[0].name,
        "copy.jpg",
    }


@pytest.mark.server
def test_cli_v1_gradio_and_actions_give_the_same_filtered_hits(tiny_service, tiny_spec, photos, tmp_path, capsys):
    """One filtered query (folder, dates, min score, sort by date) through every front end: the same SearchOptions."""
    from clipapp.app import actions
    from clipapp.app.cli import main
    from clipapp.app.ui.common import AppContext
    from clipapp.index import SearchFilter, SearchOptions

    folder = tmp_path / "pics"
    (folder / "keep").mkdir(parents=True)
    (folder / "skip").mkdir()
    for i, photo in enumerate(photos[:4]):
        shutil.copy(photo, folder / ("keep" if i % 2 else "skip") / photo.name)
    source, under = str(folder), str(folder / "keep")
    dates = {"after": "2000-01-01", "before": "2999-12-31"}
    ctx = AppContext(service=tiny_service, state_dir=tmp_path / "state", allowed_roots=(folder,))
    with serving(ctx) as url:
        via_gradio = Client(url, verbose=False).predict(
            source, "a cat", "simple", 3, -0.5, "", dates["after"], dates["before"], under, "date",
            api_name="/search_text",
        )  # fmt: skip
        form = {"source": source, "query": "a cat", "k": 3, "templates": "simple", "threshold": -0.5, "sort": "date"}
        via_http = requests.post(url + "v1/search", data={**form, **dates, "under": under}).json()
    options = SearchOptions(k=3, min_score=-0.5, filter=SearchFilter.parse(**dates, under=under), sort="date")
    via_actions = actions.search_shared(ctx.sessions, source, query="a cat", options=options, templates="simple")
    _, index_path = ctx.sessions.folder_and_index_path(source, "")
    cli = ["search", "--index", str(index_path), "--text", "a cat", "-k", "3", "--min-score", "-0.5"]
    cli += ["--after", dates["after"], "--before", dates["before"], "--under", under, "--sort", "date"]
    assert main([*cli, "--model", tiny_spec, "--json"]) == 0
    via_cli = json.loads(capsys.readouterr().out)

    expected = via_actions.to_dict()["results"]
    assert len(expected) == 2 and all(Path(hit["path"]).parent == folder / "keep" for hit in expected)
    gradio_hits = [
        {("path" if key == "image" else key): value for key, value in hit.items()} for hit in via_gradio["results"]
    ]
    for hits in (gradio_hits, via_http["results"], via_cli["results"]):
        assert [{k: v for k, v in hit.items() if k != "score"} for hit in hits] == [
            {k: v for k, v in hit.items() if k != "score"} for hit in expected
        ]
        assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)


def test_search_by_image_finds_the_image_itself(client, photos):
    result = client.predict("examples", handle_file(str(photos[0])), 3, -1, api_name="/search_image")
    assert Path(result["results"][0]["image"]).name == photos[0].name
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_threshold_filters_results(client):
    result = client.predict("examples", "a cat", "simple", 50, 0.999, api_name="/search_text")
    assert all(hit["score"] >= 0.999 for hit in result["results"])


def test_uploads_are_private_to_their_session(app_url, photos):
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    report = alice.predict("my uploads", [handle_file(str(p)) for p in photos[:3]], api_name="/index_images")
    assert report["added"] == 3 and report["total"] == 3
    again = alice.predict("my uploads", [], api_name="/index_images")
    assert again["added"] == 0 and again["total"] == 3
    mine = alice.predict("my uploads", handle_file(str(photos[1])), 3, -1, api_name="/search_image")
    assert len(mine["results"]) == 3 and mine["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    theirs = bob.predict("my uploads", "a cat", "simple", 10, -1, api_name="/search_text")
    assert theirs["results"] == []


def test_only_offered_sources_can_be_indexed(client):
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("/etc", [], api_name="/index_images")


def test_typed_query_never_reads_server_files(client):
    # "img:/etc/hostname" is searched as text, not opened as an image on the server.
    result = client.predict("examples", "img:/etc/hostname + cat", "simple", 3, -1, api_name="/search_text")
    assert len(result["results"]) == 3


def test_registry_refuses_unlisted_sources_and_bad_sessions(tiny_service, tmp_path):
    from clipapp.app.sessions import SessionStore
    from clipapp.errors import ClipAppError

    registry = SessionStore(tiny_service, tmp_path, EXAMPLES_DIR, allowed_roots=(tmp_path / "ok",))
    assert registry.sources() == ["examples", str(tmp_path / "ok"), "my uploads"]
    for source in ("/etc", str(tmp_path / "ok" / ".."), str(tmp_path)):
        with pytest.raises(ClipAppError, match="--allowed-root"):
            registry.folder_and_index_path(source, "session1")
    with pytest.raises(ClipAppError, match="session"):
        registry.folder_and_index_path("my uploads", "../../etc")


def test_search_tab_filters(client):
    photos_dir = str(EXAMPLES_DIR / "photos")
    # the filter inputs follow the old ones: source, query, templates, k, min score, tag, after, before, under, sort
    under = client.predict(
        "examples", "a cat", "simple", 50, -1, "", "", "", photos_dir, "relevance", api_name="/search_text"
    )["results"]
    assert under and all(hit["image"].startswith(photos_dir + "/") for hit in under)
    future = client.predict(
        "examples", "a cat", "simple", 5, -1, "", "2999-01-01", "", "", "date", api_name="/search_text"
    )
    assert future == {"results": []}
    with pytest.raises(AppError, match="is not a date"):
        client.predict("examples", "a cat", "simple", 5, -1, "", "yesterday", api_name="/search_text")
