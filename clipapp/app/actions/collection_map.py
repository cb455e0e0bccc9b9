"""The map of a collection: every image of an index placed in 2D with its k-means cluster, each cluster named by
the label (the user's, or a built-in vocabulary) whose text embedding best matches its centroid. The geometry and
its cache live in clipapp/index/layout.py; this adds the names (they need the model) and the typed result."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from clipapp.errors import ClipAppError

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.index import ImageIndex
    from clipapp.model.service import ClipService
    from clipapp.progress import ProgressFn

# Names for clusters when the user gives no labels: common photo subjects (COCO's object classes plus scenes).
VOCABULARY: tuple[str, ...] = (
    "person",
    "people",
    "child",
    "face",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic",
    "street",
    "building",
    "house",
    "city",
    "bridge",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "animal",
    "insect",
    "fish",
    "flower",
    "tree",
    "forest",
    "garden",
    "grass",
    "mountain",
    "beach",
    "sea",
    "lake",
    "river",
    "snow",
    "sky",
    "sunset",
    "night",
    "food",
    "fruit",
    "vegetable",
    "cake",
    "drink",
    "kitchen",
    "room",
    "furniture",
    "bed",
    "chair",
    "table",
    "book",
    "document",
    "screenshot",
    "text",
    "computer",
    "phone",
    "toy",
    "ball",
    "sport",
    "shoe",
    "sneaker",
    "boot",
    "sandal",
    "bag",
    "shirt",
    "t-shirt",
    "dress",
    "coat",
    "trouser",
    "pullover",
    "hat",
    "clothing",
    "jewelry",
    "painting",
    "drawing",
    "art",
    "music",
    "instrument",
    "party",
    "wedding",
    "baby",
    "pattern",
    "texture",
    "logo",
    "map",
    "chart",
    "tool",
    "plant",
)


@dataclass(frozen=True)
class MapCluster:
    id: int
    name: str
    size: int


@dataclass
class CollectionMap:
    """One row per image: its (first) path, position in [0, 1]^2 and cluster id; and the named clusters."""

    paths: list[str]
    xy: np.ndarray  # (n, 2) float32
    cluster: np.ndarray  # (n,) int32
    clusters: list[MapCluster]
    method: str  # how the sample was laid out: "umap" (or "pca" without umap-learn)

    def to_dict(self) -> dict:
        return {
            "points": [
                {"path": path, "x": round(float(x), 5), "y": round(float(y), 5), "cluster": int(c)}
                for path, (x, y), c in zip(self.paths, self.xy.tolist(), self.cluster.tolist(), strict=True)
            ],
            "clusters": [{"id": c.id, "name": c.name, "size": c.size} for c in self.clusters],
        }


def name_clusters(centroids: np.ndarray, label_vectors: np.ndarray, labels: Sequence[str]) -> list[str]:
    """Each centroid's best-matching label (cosine); a label used twice gets " 2", " 3", ... so names stay unique."""
    best = np.argmax(centroids @ label_vectors.T, axis=1)
    seen: dict[str, int] = {}
    names = []
    for i in best.tolist():
        seen[labels[i]] = seen.get(labels[i], 0) + 1
        names.append(labels[i] if seen[labels[i]] == 1 else f"{labels[i]} {seen[labels[i]]}")
    return names


def map_of_index(
    service: ClipService,
    index: ImageIndex,
    *,
    labels: Sequence[str] = (),
    clusters: int | None = None,
    progress: ProgressFn | None = None,
) -> CollectionMap:
    """The map of an open index (cached beside it until the index changes), clusters named by `labels` (or the
    built-in VOCABULARY)."""
    from clipapp.index.layout import index_layout

    if clusters is not None and clusters < 1:
        raise ClipAppError(f"--clusters must be at least 1, not {clusters}.")
    names = [" ".join(label.split()) for label in labels if label.strip()] or list(VOCABULARY)
    paths, layout = index_layout(index, clusters=clusters, progress=progress)
    cluster_names = name_clusters(layout.centroids, service.text_embeddings(names), names)
    sizes = np.bincount(layout.cluster, minlength=len(layout.centroids))
    found = [MapCluster(i, cluster_names[i], int(sizes[i])) for i in range(len(layout.centroids))]
    return CollectionMap(paths, layout.xy, layout.cluster, found, layout.method)


def collection_map(
    service: ClipService,
    index_path: str | os.PathLike,
    *,
    labels: Sequence[str] = (),
    clusters: int | None = None,
    progress: ProgressFn | None = None,
) -> CollectionMap:
    """The map of the index at `index_path` (see map_of_index)."""
    from clipapp.index import ImageIndex, require_index

    require_index(index_path)
    with ImageIndex.open(index_path, expected_spec=service.spec) as index:
        return map_of_index(service, index, labels=labels, clusters=clusters, progress=progress)


def source_map(
    sessions: SessionStore, source: str, session: str, *, labels: Sequence[str] = (), clusters: int | None = None
) -> CollectionMap:
    """The map of a page source's index (the Search tab's map view)."""
    if clusters is not None and clusters < 1:  # before the index is opened (or built)
        raise ClipAppError(f"--clusters must be at least 1, not {clusters}.")
    with sessions.searchable(source, session) as index:
        return map_of_index(sessions.service, index, labels=labels, clusters=clusters)


def shared_map(
    sessions: SessionStore, source: str, *, labels: Sequence[str] = (), clusters: int | None = None
) -> CollectionMap:
    """/v1/map: the map of one of the shared indexes (never a browser session's uploads)."""
    return source_map(sessions, sessions.shared(source), "", labels=labels, clusters=clusters)
