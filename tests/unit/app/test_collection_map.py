"""Cluster naming and the JSON shape of the collection map (clipapp/app/actions/collection_map.py), and the page
payload that bounds what the browser draws (clipapp/app/map_view.py)."""

from __future__ import annotations

import json

import numpy as np

from clipapp.app.actions.collection_map import CollectionMap, MapCluster, name_clusters
from clipapp.app.map_view import drawn_payload, map_document, payload_json


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_each_cluster_takes_its_best_matching_label_and_names_stay_unique():
    labels = ["cat", "dog", "car"]
    label_vectors = _unit(np.eye(3))
    centroids = _unit([[0.1, 0.9, 0.0], [0.0, 0.1, 1.0], [0.0, 1.0, 0.2], [1.0, 0.0, 0.3]])
    assert name_clusters(centroids, label_vectors, labels) == ["dog", "car", "dog 2", "cat"]


def _result(n: int) -> CollectionMap:
    rng = np.random.default_rng(0)
    cluster = (np.arange(n) % 2).astype(np.int32)
    sizes = np.bincount(cluster, minlength=2)
    return CollectionMap(
        [f"/p/{i}.png" for i in range(n)],
        rng.random((n, 2)).astype(np.float32),
        cluster,
        [MapCluster(0, "cat", int(sizes[0])), MapCluster(1, "dog", int(sizes[1]))],
        "umap",
    )


def test_json_shape_covers_every_image():
    result = _result(5)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"points", "clusters"}
    assert [set(p) for p in data["points"]] == [{"path", "x", "y", "cluster"}] * 5
    assert data["points"][3]["path"] == "/p/3.png" and data["points"][3]["cluster"] == 1
    assert data["clusters"] == [{"id": 0, "name": "cat", "size": 3}, {"id": 1, "name": "dog", "size": 2}]


def test_the_browser_gets_a_bounded_sample_but_true_cluster_sizes():
    result = _result(1000)
    payload = drawn_payload(result, lambda p: "u" + p, max_drawn=100)
    assert len(payload["points"]) == 100 and len({p["path"] for p in payload["points"]}) == 100
    assert [c["size"] for c in payload["clusters"]] == [500, 500]
    assert "100 drawn" in payload["note"]


def test_paths_cannot_break_out_of_the_page():
    result = _result(2)
    result.paths[0] = "/p/</script><b>&x.png"
    text = payload_json(drawn_payload(result, lambda p: p))
    assert "<" not in text and "&" not in text and json.loads(text)["points"][0]["path"] == result.paths[0]
    assert "</script><b>" not in map_document(result, lambda p: p)
