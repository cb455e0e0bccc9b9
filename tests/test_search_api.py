"""The Search tab's API through gradio_client: examples out of the box, uploads per session, image search."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import EXAMPLES_DIR


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
    from clipapp.ui.search_tab import gallery_of

    result = {"results": [{"image": "/x/cat.jpg", "score": 0.31234}, {"image": "/x/dog.jpg", "score": 0.2}]}
    assert gallery_of(result) == [("/x/cat.jpg", "0.312  cat.jpg"), ("/x/dog.jpg", "0.200  dog.jpg")]
    assert gallery_of(None) == []


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
    from clipapp.errors import ClipAppError
    from clipapp.sessions import SessionStore

    registry = SessionStore(tiny_service, tmp_path, EXAMPLES_DIR, allowed_roots=(tmp_path / "ok",))
    assert registry.sources() == ["examples", str(tmp_path / "ok"), "my uploads"]
    for source in ("/etc", str(tmp_path / "ok" / ".."), str(tmp_path)):
        with pytest.raises(ClipAppError, match="--allowed-root"):
            registry.folder_and_index_path(source, "session1")
    with pytest.raises(ClipAppError, match="session"):
        registry.folder_and_index_path("my uploads", "../../etc")
