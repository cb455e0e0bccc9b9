"""The launched app through gradio_client, as a script user would call it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image


def _api(client) -> dict:
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def test_api_names_are_published(client):
    assert {"/classify", "/similarity"} <= set(_api(client))


def test_every_optional_parameter_has_a_default(client):
    required = {
        name: [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
        for name, info in _api(client).items()
    }
    assert required["/classify"] == ["files_", "labels_"]
    assert required["/similarity"] == ["files_", "texts_"]
    assert required["/search_text"] == ["query_"]
    assert required["/search_image"] == ["image_"]
    assert required["/index_images"] == []
    assert required["/finetune"] == []


def test_short_form_and_a_single_file(client, photos):
    """`client.predict(files, labels, api_name="/classify")`, with one file where a list is expected."""
    result = client.predict(handle_file(str(photos[0])), "cat, rocket", api_name="/classify")
    assert [r["image"] for r in result["results"]] == [photos[0].name]
    assert len(result["results"][0]["top"]) == 2  # top-k defaults to 5, capped at the number of labels
    matrix = client.predict(handle_file(str(photos[1])), "a cat\na dog", api_name="/similarity")
    assert np.asarray(matrix["matrix"]).shape == (1, 2)


def test_classify_returns_top_k_without_drawing(client, photos):
    """API callers get the JSON; the heatmap is drawn only by the page (a chained, private event)."""
    result = client.predict(
        [handle_file(str(p)) for p in photos[:3]],
        "cat, rocket, coffee, astronaut",
        "simple",
        "",
        2,
        api_name="/classify",
    )
    assert [r["image"] for r in result["results"]] == [p.name for p in photos[:3]]
    assert all(len(r["top"]) == 2 for r in result["results"])


def test_each_image_is_encoded_once_per_classify(client, tiny_service, photos):
    before = tiny_service.stats.images_encoded
    client.predict([handle_file(str(p)) for p in photos[:3]], "cat, rocket, coffee", api_name="/classify")
    assert tiny_service.stats.images_encoded - before == 3


def test_heatmap_shows_the_cosines_the_classification_computed(tiny_service, photos, tmp_path):
    from clipapp.app import actions
    from clipapp.app.ui.common import AppContext
    from clipapp.app.ui.zero_shot_tab import HeatmapFiles, classify_images

    ctx = AppContext(service=tiny_service, state_dir=tmp_path)
    paths = [str(p) for p in photos[:2]]
    before = tiny_service.stats.images_encoded
    result, figure = classify_images(ctx, paths, "cat, rocket, coffee")
    assert tiny_service.stats.images_encoded - before == 2
    direct = actions.classify(tiny_service, actions.load_named_images(paths), "cat, rocket, coffee")
    np.testing.assert_allclose(figure["matrix"], direct.scores.cosine, atol=1e-6)
    assert figure["texts"] == ["cat", "rocket", "coffee"] and figure["images"] == paths
    drawn = Image.open(HeatmapFiles().draw(figure))
    assert drawn.format == "PNG" and np.asarray(drawn.convert("L")).std() > 5


def test_similarity_endpoint(client, photos):
    result = client.predict([handle_file(str(photos[0]))], "a cat\na dog\na rocket", api_name="/similarity")
    assert result["texts"] == ["a cat", "a dog", "a rocket"]
    assert len(result["matrix"]) == 1 and len(result["matrix"][0]) == 3


def test_bad_input_is_a_message_and_the_server_keeps_serving(client, photos, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"GIF89a-but-not-really")
    with pytest.raises(AppError, match="fake.jpg: not an image"):
        client.predict([handle_file(str(fake))], "a, b", "simple", "", 2, api_name="/classify")
    with pytest.raises(AppError, match="Duplicate"):
        client.predict([handle_file(str(photos[0]))], "a, a", "simple", "", 2, api_name="/classify")
    with pytest.raises(AppError, match="No images"):
        client.predict([], "a, b", "simple", "", 2, api_name="/classify")
    result = client.predict([handle_file(str(photos[0]))], "a, b", "simple", "", 2, api_name="/classify")
    assert len(result["results"]) == 1


def test_an_untouched_epochs_setting_is_each_modes_own_schedule():
    """The API's default epochs (None) is the chosen mode's measured schedule, not the default mode's."""
    from clipapp.app.ui.finetune_tab import make_config
    from clipapp.finetune import MODE_DEFAULTS

    for mode in ("head", "partial"):
        config = make_config({"mode": mode, "epochs": None, "blocks": 2, "loss": "cross-entropy", "wise_alpha": "auto"})
        assert config.epochs == MODE_DEFAULTS[mode]["epochs"]
    assert MODE_DEFAULTS["head"]["epochs"] != MODE_DEFAULTS["partial"]["epochs"]
    assert make_config({"mode": "head", "epochs": 7}).epochs == 7


def test_find_duplicates_endpoint(client):
    """The groups' JSON as the CLI's, each image's path under "image" (gradio_client would download a "path")."""
    result = client.predict(threshold_=0.95, api_name="/find_duplicates")
    assert result["threshold"] == 0.95 and isinstance(result["groups"], list)
    assert result["images"] >= 4  # the examples index: photos and fashion images
    for group in result["groups"]:
        assert [image["image"] for image in group["images"]] == group["paths"]


def test_list_models_is_the_cli_json_with_this_server_selected(client, server, capsys):
    from clipapp.app.cli import main

    answer = client.predict(api_name="/list_models")
    assert main(["models", "--json", "--model", server.ctx.service.loaded.requested_spec]) == 0
    assert answer == json.loads(capsys.readouterr().out)
    assert answer["selected"] == server.ctx.service.loaded.requested_spec
