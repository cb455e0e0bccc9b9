"""The Search tab's map: draw the examples' map, select images on it with a lasso (the default) or a box, and the
selected images go into a class through "Add to class" (the flow that ends in "Fine-tune on these") or get a tag
through "Tag these" that the "Only tagged" filter then offers. Every read waits for the state it reads."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

PAD, HEIGHT = 12, 560  # clipapp/viz/map_page.py's canvas margin and height


def _drawn_map(page, app_url):
    """The map drawn on the page: (its canvas on screen, the payload it draws)."""
    page.goto(app_url)
    page.get_by_role("tab", name="Search").click()
    page.get_by_role("button", name="Build / update index").click()
    expect(page.get_by_text(re.compile(r'"total":\s*\d+|total'))).not_to_have_count(0)
    page.get_by_text("Map of the collection").click()
    page.get_by_role("button", name="Draw the map").click()
    canvas = page.locator("#collection-map canvas")
    expect(canvas).to_be_visible(timeout=180_000)
    expect(page.locator("#collection-map .clipmap-note")).to_contain_text("clusters")  # painted with its data
    canvas.scroll_into_view_if_needed()  # page.mouse works in viewport coordinates
    payload = json.loads(page.locator("#collection-map .clipmap-data").text_content())
    return canvas, payload


def _inside(x: float, y: float, polygon: list[tuple[float, float]]) -> bool:
    odd = False
    for (xi, yi), (xj, yj) in zip(polygon, polygon[-1:] + polygon[:-1], strict=True):
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            odd = not odd
    return odd


def _lasso(canvas, page, corners: list[tuple[float, float]]) -> None:
    """Draw a closed lasso through `corners` (canvas pixels) with mouse moves, where the canvas is now."""
    canvas.scroll_into_view_if_needed()  # page.mouse works in viewport coordinates
    box = canvas.bounding_box()
    scale = box["width"] / float(canvas.get_attribute("width"))  # canvas pixels -> CSS pixels
    page.mouse.move(box["x"] + corners[0][0] * scale, box["y"] + corners[0][1] * scale)
    page.mouse.down()
    for x, y in corners[1:] + corners[:1]:
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
    page.mouse.up()


def _selected_paths(page, expected_count: int) -> list[str]:
    selected = page.get_by_label("Selected images (one path per line)")
    expect(selected).to_have_value(
        re.compile(r"(?:[^\n]+\.(?:jpg|png)\n){%d}[^\n]+\.(?:jpg|png)$" % (expected_count - 1))
    )
    return [line for line in selected.input_value().splitlines() if line.strip()]


def test_a_lasso_on_the_map_adds_the_images_inside_it_to_a_class_and_tags_them(page, app_url):
    canvas, payload = _drawn_map(page, app_url)
    width = float(canvas.get_attribute("width"))
    # a diamond through the middles of the canvas's sides: a lasso, not the box around it
    corners = [(width / 2, 4.0), (width - 4.0, HEIGHT / 2), (width / 2, HEIGHT - 4.0), (4.0, HEIGHT / 2)]
    inside = sorted(
        p["path"]
        for p in payload["points"]
        if _inside(PAD + p["x"] * (width - 2 * PAD), PAD + (1 - p["y"]) * (HEIGHT - 2 * PAD), corners)
    )
    assert len(inside) >= 2, "the examples' map should put several images inside the diamond"
    page.locator("#collection-map .clipmap-mode-lasso").click()
    _lasso(canvas, page, corners)
    assert sorted(_selected_paths(page, len(inside))) == inside
    page.get_by_label("Class name").fill("lassoed")
    page.get_by_role("button", name="Add to class").click()
    expect(page.locator("#collected-classes")).to_contain_text(re.compile(rf"lassoed\s*{len(inside)}"))
    # "Add to class" empties the selection (and the page grew above the map): lasso again, then tag
    expect(page.get_by_label("Selected images (one path per line)")).to_have_value("")
    _lasso(canvas, page, corners)
    _selected_paths(page, len(inside))
    page.get_by_label("Tag name").fill("from-the-map")
    page.get_by_role("button", name="Tag these").click()
    expect(page.locator("#tagged-images")).to_contain_text(f"Tagged {len(inside)} images")
    page.get_by_label("Only tagged").click()
    expect(page.get_by_role("option", name=f"from-the-map ({len(inside)})")).to_be_visible()


def test_box_selection_on_the_map_adds_images_to_a_class(page, app_url):
    canvas, _ = _drawn_map(page, app_url)
    page.locator("#collection-map .clipmap-mode-box").click()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()
    selected = page.get_by_label("Selected images (one path per line)")
    expect(selected).to_have_value(re.compile(r"\.(jpg|png)"))
    count = len([line for line in selected.input_value().splitlines() if line.strip()])
    assert count >= 2
    page.get_by_label("Class name").fill("mapped")
    page.get_by_role("button", name="Add to class").click()
    expect(page.locator("#collected-classes")).to_contain_text(re.compile(rf"mapped\s*{count}"))
