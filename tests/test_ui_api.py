"""The launched app through gradio_client, as a script user would call it."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError


def test_api_names_are_published(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/classify", "/similarity"} <= names


def test_classify_returns_top_k_and_heatmap(client, photos):
    result, heatmap = client.predict(
        [handle_file(str(p)) for p in photos[:3]], "cat, rocket, coffee, astronaut", "simple", "", 2,
        api_name="/classify",
    )
    assert [r["image"] for r in result["results"]] == [p.name for p in photos[:3]]
    assert all(len(r["top"]) == 2 for r in result["results"])
    assert heatmap["type"] == "matplotlib" and heatmap["plot"].startswith("data:image")


def test_similarity_endpoint(client, photos):
    result, heatmap = client.predict([handle_file(str(photos[0]))], "a cat\na dog\na rocket", api_name="/similarity")
    assert result["texts"] == ["a cat", "a dog", "a rocket"]
    assert len(result["matrix"]) == 1 and len(result["matrix"][0]) == 3
    assert heatmap["plot"].startswith("data:image")


def test_bad_input_is_a_message_and_the_server_keeps_serving(client, photos, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"GIF89a-but-not-really")
    with pytest.raises(AppError, match="fake.jpg: not an image"):
        client.predict([handle_file(str(fake))], "a, b", "simple", "", 2, api_name="/classify")
    with pytest.raises(AppError, match="Duplicate"):
        client.predict([handle_file(str(photos[0]))], "a, a", "simple", "", 2, api_name="/classify")
    with pytest.raises(AppError, match="No images"):
        client.predict([], "a, b", "simple", "", 2, api_name="/classify")
    result, _ = client.predict([handle_file(str(photos[0]))], "a, b", "simple", "", 2, api_name="/classify")
    assert len(result["results"]) == 1
