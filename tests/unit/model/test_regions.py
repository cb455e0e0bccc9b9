"""Region maps (clipapp/model/regions.py): the grid covers the image, rows top to bottom; the default method points
at the right item of a composite on the demo model; every method runs on a ResNet and a ViT tower."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from clipapp.model.regions import DEFAULT_METHOD, METHODS, explain, grid_shape, letterbox, shrink

LABELS = [c.lower() for c in CLASS_NAMES]


@pytest.fixture(scope="module")
def demo_service():
    from clipapp.model.service import ClipService

    return ClipService.load("demo", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist("test")


def _composites(fashion, n: int):
    """n composites of two items of different classes: even ones side by side, odd ones stacked."""
    images, labels = fashion
    out, i = [], 0
    while len(out) < n:
        a, b = i, i + 1
        i += 2
        if labels[a] == labels[b]:
            continue
        horizontal = len(out) % 2 == 0
        canvas = np.concatenate([images[a], images[b]], axis=1 if horizontal else 0)
        out.append((Image.fromarray(canvas).convert("RGB"), int(labels[a]), int(labels[b]), horizontal))
    return out


def test_big_images_are_shrunk_before_the_windows_are_cut():
    image = Image.new("RGB", (4000, 1000))
    assert shrink(image, 64, short=True).size == (256, 64)
    assert shrink(image, 64, short=False).size == (64, 16)
    assert shrink(image, 5000, short=False) is image


def test_grid_shape_follows_the_image():
    assert grid_shape(56, 28) == (4, 8)
    assert grid_shape(28, 56) == (8, 4)
    assert grid_shape(100, 100, 5) == (5, 5)
    assert grid_shape(1000, 10) == (1, 8)


def test_default_method_points_at_the_named_item_of_a_composite(demo_service, fashion):
    """The pointing game: the peak of each present class's map falls in the half holding that item (rows for
    stacked composites, so a transposed grid would fail). Chance is 0.5."""
    items = _composites(fashion, 20)
    maps = list(explain(demo_service, [image for image, *_ in items], LABELS, method=DEFAULT_METHOD))
    hits = []
    for (image, first, second, horizontal), result in zip(items, maps, strict=True):
        assert result.grids.shape == (len(LABELS), *grid_shape(*image.size))
        for label, half in ((first, 0), (second, 1)):
            grid = result.grids[label]
            row, col = np.unravel_index(int(grid.argmax()), grid.shape)
            position, extent = (col, grid.shape[1]) if horizontal else (row, grid.shape[0])
            hits.append(int(position >= extent / 2) == half)
    assert np.mean(hits) >= 0.9


def test_default_method_finds_each_item_of_a_2x2_composite(demo_service, fashion):
    """A square image, where the whole-image window says nothing: four items of distinct classes in the quadrants;
    each class's peak falls in its own quadrant (chance 0.25)."""
    images, labels = fashion
    hits, start = [], 0
    while len(hits) < 100:
        picks = list(range(start, start + 4))
        start += 4
        if len({int(labels[k]) for k in picks}) < 4:
            continue
        canvas = np.block([[images[picks[0]], images[picks[1]]], [images[picks[2]], images[picks[3]]]])
        (result,) = explain(demo_service, [Image.fromarray(canvas).convert("RGB")], LABELS)
        for quadrant, k in enumerate(picks):
            row, col = np.unravel_index(int(result.grids[labels[k]].argmax()), result.grids.shape[1:])
            hits.append((row >= 4, col >= 4) == (quadrant >= 2, quadrant % 2 == 1))
    assert np.mean(hits) >= 0.9


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_resnet_and_vit(method, demo_service, tiny_service, fashion):
    image = Image.fromarray(np.concatenate(fashion[0][:2], axis=1)).convert("RGB")
    for service in (demo_service, tiny_service):  # a ModifiedResNet (32-pixel input) and a ViT
        (result,) = explain(service, [image], ["sneaker", "coat"], method=method)
        assert result.labels == ["sneaker", "coat"]
        assert result.grids.shape == (2, 4, 8) and result.grids.dtype == np.float32
        assert np.isfinite(result.grids).all()


def test_occlusion_of_empty_canvas_changes_nothing(tiny_service, demo_service, fashion):
    """Known for any model: covering black canvas with black leaves the image as it was, so the cells far from the
    only item (in the right third) are 0, and those over it are not."""
    canvas = np.zeros((32, 96), dtype=np.uint8)  # black all round: the letterbox and the patches are black too
    canvas[2:30, 64:92] = fashion[0][0]
    image = Image.fromarray(canvas).convert("RGB")
    for service in (tiny_service, demo_service):
        (result,) = explain(service, [image], ["sneaker", "coat"], method="occlusion")
        assert result.grids.shape == (2, 3, 8)
        far, over = np.abs(result.grids[:, :, :2]).max(), np.abs(result.grids[:, :, 6:]).max()
        assert far < 1e-4 and far < 0.01 * over  # 0 but for float rounding (~1e-5: batches of other sizes)


def test_letterbox_keeps_the_whole_image_centred():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    square, box, fill = letterbox(image)
    assert square.size == (40, 40) and box == (0, 10, 40, 30) and fill == (10, 20, 30)
    assert square.crop(box).tobytes() == image.tobytes()


def test_to_dict_is_the_documented_shape(tiny_service, photos):
    (result,) = explain(tiny_service, [str(photos[0])], ["cat", "dog"])
    payload = result.to_dict()
    assert payload["image"] == str(photos[0])
    assert [entry["label"] for entry in payload["labels"]] == ["cat", "dog"]
    rows, cols = grid_shape(*Image.open(photos[0]).size)
    grid = payload["labels"][0]["grid"]
    assert len(grid) == rows and all(len(row) == cols for row in grid)
    assert all(isinstance(value, float) for row in grid for value in row)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"labels": []}, "No labels"), ({"method": "magic"}, "Unknown region method"), ({"cells": 0}, "1 to 64")],
)
def test_user_mistakes_are_clipapp_errors(tiny_service, photos, kwargs, message):
    arguments = {"labels": ["cat"], **kwargs}
    with pytest.raises(ClipAppError, match=message):
        list(explain(tiny_service, [str(photos[0])], **arguments))


def test_results_name_their_images(tiny_service, photos):
    image = Image.open(photos[1])
    found = explain(tiny_service, [photos[0], image, Image.new("RGB", (40, 40))], ["cat"])
    assert [r.image for r in found] == [str(photos[0]), str(photos[1]), "image 3"]
    (named,) = explain(tiny_service, [image], ["cat"], names=["upload.jpg"])
    assert named.image == "upload.jpg"


def test_progress_is_reported_per_image(tiny_service, photos):
    seen = []
    list(explain(tiny_service, [str(p) for p in photos[:3]], ["cat"], progress=lambda *a: seen.append(a)))
    assert seen == [(1, 3, "Region maps"), (2, 3, "Region maps"), (3, 3, "Region maps")]
