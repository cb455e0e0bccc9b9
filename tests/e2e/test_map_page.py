"""The Search tab's map: draw the examples' map, drag a box over it, and the boxed images go into a class through
"Add to class" (the flow that ends in "Fine-tune on these")."""

from __future__ import annotations

import re

from playwright.sync_api import expect


def test_box_selection_on_the_map_adds_images_to_a_class(page, app_url):
    page.goto(app_url)
    page.get_by_role("tab", name="Search").click()
    page.get_by_role("button", name="Build / update index").click()
    expect(page.get_by_text(re.compile(r'"total":\s*\d+|total'))).not_to_have_count(0)
    page.get_by_text("Map of the collection").click()
    page.get_by_role("button", name="Draw the map").click()
    canvas = page.locator("#collection-map canvas")
    expect(canvas).to_be_visible(timeout=180_000)
    canvas.scroll_into_view_if_needed()  # page.mouse works in viewport coordinates
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
