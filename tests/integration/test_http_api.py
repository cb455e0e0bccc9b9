"""The plain HTTP API (/v1): the CLI's JSON, the same limits with clear HTTP errors, the same login."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipapp.app import actions
from clipapp.app.http_api import create_app
from clipapp.app.sessions import SessionStore
from tests.support.hostile import bad_image_files
from tests.support.paths import EXAMPLES_DIR


@pytest.fixture(scope="module")
def store(tiny_service, tmp_path_factory):
    return SessionStore(tiny_service, tmp_path_factory.mktemp("state"), EXAMPLES_DIR)


@pytest.fixture(scope="module")
def api(store):
    return TestClient(create_app(store, max_upload="2mb"))


def _files(paths, field="images"):
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_classify_matches_the_cli_json(api, tiny_service, photos):
    response = api.post("/v1/classify", files=_files(photos[:2]), data={"labels": "cat, rocket, coffee", "top_k": 2})
    assert response.status_code == 200
    expected = actions.classify(
        tiny_service,
        actions.load_named_images(photos[:2], names=[p.name for p in photos[:2]]),
        "cat, rocket, coffee",
        top_k=2,
    ).to_dict()
    got = response.json()
    assert got["model"] == expected["model"]
    for mine, theirs in zip(got["results"], expected["results"], strict=False):
        assert mine["image"] == theirs["image"]
        assert [t["label"] for t in mine["top"]] == [t["label"] for t in theirs["top"]]
        np.testing.assert_allclose([t["prob"] for t in mine["top"]], [t["prob"] for t in theirs["top"]], atol=1e-5)


def test_similarity_embed_and_search(api, tiny_service, photos):
    sim = api.post("/v1/similarity", files=_files(photos[:1]), data={"texts": ["a cat", "a dog"]}).json()
    assert sim["texts"] == ["a cat", "a dog"] and np.asarray(sim["matrix"]).shape == (1, 2)
    texts = api.post("/v1/embed", data={"texts": "a cat\na dog"}).json()
    assert texts["items"] == ["a cat", "a dog"] and np.asarray(texts["vectors"]).shape == (2, tiny_service.embed_dim)
    np.testing.assert_allclose(texts["vectors"], tiny_service.encode_texts(["a cat", "a dog"]), atol=1e-5)
    images = api.post("/v1/embed", files=_files(photos[:1])).json()
    assert images["items"] == [photos[0].name] and np.linalg.norm(images["vectors"][0]) == pytest.approx(1, abs=1e-4)
    hits = api.post("/v1/search", data={"query": "a cat", "k": 3}).json()["results"]
    assert len(hits) == 3 and {"id", "path", "score", "aliases"} == set(hits[0])
    by_image = api.post("/v1/search", files=_files(photos[:1], field="image"), data={"k": 1}).json()["results"]
    assert by_image[0]["path"].endswith(photos[0].name) and by_image[0]["score"] == pytest.approx(1, abs=1e-4)


def test_errors_are_http_codes_with_a_message(api, photos, tmp_path):
    bad = bad_image_files(tmp_path)
    cases = [
        (
            api.post("/v1/classify", files=_files([bad["thin_1x20000.png"]]), data={"labels": "a, b"}),
            400,
            "aspect-ratio limit",
        ),
        (
            api.post("/v1/classify", files=_files([bad["text_as_jpg.jpg"]]), data={"labels": "a, b"}),
            400,
            "text_as_jpg.jpg: not an image",
        ),
        (api.post("/v1/classify", files=_files(photos[:1]), data={"labels": "cat, cat"}), 400, "Duplicate"),
        (
            api.post("/v1/classify", files=_files([bad["wide_20000x1.png"]] * 65), data={"labels": "a, b"}),
            413,
            "at most 64",
        ),
        (
            api.post(
                "/v1/classify", files=[("images", ("big.png", b"\0" * 3_000_000, "image/png"))], data={"labels": "a, b"}
            ),
            413,
            "--max-upload",
        ),
        (api.post("/v1/classify", data={"labels": "a, b"}), 422, "images"),
        (api.post("/v1/classify", files=_files(photos[:1]), data={"labels": "a", "top_k": "many"}), 422, "top_k"),
        (api.post("/v1/embed", data={}), 400, "either images or texts"),
        (api.post("/v1/search", data={"source": "/etc", "query": "x"}), 400, "--allowed-root"),
        (api.post("/v1/search", data={"source": "my uploads", "query": "x"}), 400, "browser session"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"] and "Traceback" not in response.text
    assert api.post("/v1/classify", files=_files(photos[:1]), data={"labels": "a, b"}).status_code == 200


def test_the_same_login_protects_the_routes(store, photos):
    api = TestClient(create_app(store, auth=("ann", "s3cret")))
    call = lambda **kw: api.post("/v1/classify", files=_files(photos[:1]), data={"labels": "a, b"}, **kw)  # noqa: E731
    assert call().status_code == 401
    assert call(auth=("ann", "wrong")).status_code == 401
    assert call(auth=("ann", "s3cret")).status_code == 200
    assert api.get("/v1/models").status_code == 401 and api.get("/v1/models", auth=("ann", "s3cret")).status_code == 200
    assert api.get("/health").status_code == 200  # the probe needs no login
    assert "/v1/classify" in api.get("/openapi.json").json()["paths"]


def test_openapi_docs_are_served(api):
    assert api.get("/docs").status_code == 200
    assert {"/v1/classify", "/v1/similarity", "/v1/embed", "/v1/search", "/health"} <= set(
        api.get("/openapi.json").json()["paths"]
    )


def test_duplicates_route(tiny_service, photos, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    for photo in photos[:2]:
        (root / photo.name).write_bytes(photo.read_bytes())
    (root / "copy.jpg").write_bytes(photos[0].read_bytes())
    client = TestClient(create_app(SessionStore(tiny_service, tmp_path / "state", EXAMPLES_DIR, (root,))))
    answer = client.post("/v1/duplicates", data={"source": str(root)})
    assert answer.status_code == 200, answer.text
    group = next(g for g in answer.json()["groups"] if str(root / "copy.jpg") in g["paths"])
    assert str(root / photos[0].name) in group["paths"] and group["keep"] in group["paths"]
    assert client.post("/v1/duplicates", data={"source": "my uploads"}).status_code == 400
    assert client.post("/v1/duplicates", data={"source": str(root), "threshold": "2"}).status_code == 422


def test_map_route_is_the_cli_json(tiny_service, photos, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    for photo in photos[:3]:  # three images: laid out without UMAP (no numba compile in this test)
        (root / photo.name).write_bytes(photo.read_bytes())
    store = SessionStore(tiny_service, tmp_path / "state", EXAMPLES_DIR, (root,))
    client = TestClient(create_app(store))
    answer = client.post("/v1/map", data={"source": str(root), "labels": "cat, dog", "clusters": 2})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert sorted(p["path"] for p in got["points"]) == sorted(str(root / p.name) for p in photos[:3])
    assert sum(c["size"] for c in got["clusters"]) == 3 and {c["name"].split()[0] for c in got["clusters"]} <= {
        "cat",
        "dog",
    }
    _, index_path = store.folder_and_index_path(str(root), "")
    assert got == actions.collection_map(tiny_service, index_path, labels=["cat", "dog"], clusters=2).to_dict()
    assert client.post("/v1/map", data={"source": "my uploads"}).status_code == 400
    assert client.post("/v1/map", data={"source": str(root), "clusters": 0}).status_code == 422
    assert client.post("/v1/map", data={"source": "/not/allowed"}).status_code == 400


def test_search_filters(api):
    photos_dir = str(EXAMPLES_DIR / "photos")
    hits = api.post("/v1/search", data={"query": "a cat", "k": 50, "under": photos_dir}).json()["results"]
    assert hits and all(hit["path"].startswith(photos_dir + "/") for hit in hits)
    everything = api.post("/v1/search", data={"query": "a cat", "k": 50}).json()["results"]
    assert len(everything) > len(hits)  # the fashion images were left out
    assert api.post("/v1/search", data={"query": "a cat", "after": "2999-01-01"}).json() == {"results": []}
    by_date = api.post("/v1/search", data={"query": "a cat", "k": 5, "sort": "date", "before": "2999-12-31"}).json()
    assert sorted(h["id"] for h in by_date["results"]) == sorted(h["id"] for h in everything[:5])
    bad = api.post("/v1/search", data={"query": "a cat", "before": "31/12/2020"})
    assert bad.status_code == 400 and "--before '31/12/2020' is not a date" in bad.json()["error"]
    assert api.post("/v1/search", data={"query": "a cat", "sort": "newest"}).status_code == 422


def test_tag_route_then_search_by_the_tag(tiny_service, photos, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    for photo in photos[:4]:
        (root / photo.name).write_bytes(photo.read_bytes())
    client = TestClient(create_app(SessionStore(tiny_service, tmp_path / "state", EXAMPLES_DIR, (root,))))
    chosen = [str(root / photos[0].name), str(root / photos[2].name)]
    answer = client.post("/v1/tag", data={"source": str(root), "tag": "picked", "paths": chosen})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"tag": "picked", "tagged": 2, "total": 2}
    hits = client.post("/v1/search", data={"source": str(root), "query": "a photo", "tag": "picked"}).json()
    assert sorted(hit["path"] for hit in hits["results"]) == sorted(chosen)
    unknown = client.post("/v1/tag", data={"source": str(root), "tag": "x", "paths": "/elsewhere/a.jpg"})
    assert unknown.status_code == 400 and "not in the index" in unknown.json()["error"]
    assert client.post("/v1/tag", data={"source": "my uploads", "tag": "x", "paths": chosen}).status_code == 400


def test_models_route_is_the_cli_json_with_this_server_selected(api, tiny_service, capsys):
    from clipapp.app.cli import main

    answer = api.get("/v1/models")
    assert answer.status_code == 200, answer.text
    assert main(["models", "--json", "--model", tiny_service.spec]) == 0
    assert answer.json() == json.loads(capsys.readouterr().out)
    assert answer.json()["selected"] == tiny_service.spec
    assert "/v1/models" in api.get("/openapi.json").json()["paths"]
