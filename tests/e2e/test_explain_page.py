"""A person's flow in the Zero-shot tab's "where" section: upload, type labels, Show where, pick a label and see
its overlay on each image."""

from __future__ import annotations

import re

from PIL import Image
from playwright.sync_api import expect


def test_a_labels_overlay_appears_on_each_image(page, app_url, photos):
    page.goto(app_url)
    page.locator("input[type=file]").first.set_input_files([str(p) for p in photos[:2]])
    expect(page.get_by_text(photos[0].name).first).to_be_visible()
    page.get_by_label("Labels (comma or newline separated)").fill("cat, rocket")
    page.get_by_role("button", name="Show where", exact=True).click()
    overlays = page.locator("#region-maps img")
    expect(overlays).to_have_count(4)  # all labels: 2 images x 2 labels
    page.get_by_label("Label to show").click()
    page.get_by_role("option", name="rocket", exact=True).click()
    expect(overlays).to_have_count(2)  # the picked label over each image
    captions = page.locator("#region-maps").get_by_text(re.compile(r"· rocket$"))
    expect(captions).to_have_count(2)
    for name in (photos[0].name, photos[1].name):
        expect(page.locator("#region-maps").get_by_text(f"{name} · rocket")).to_be_visible()
    # each overlay is a loaded picture at its image's own size (these photos are within the overlay's 224-512 px);
    # the gallery swaps its <img> sources after the count settles, so wait until both have decoded (CI once read 0x0)
    page.wait_for_function(
        "() => { const els = [...document.querySelectorAll('#region-maps img')];"
        " return els.length === 2 && els.every(e => e.complete && e.naturalWidth > 0); }"
    )
    sizes = overlays.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sorted(map(tuple, sizes)) == sorted(Image.open(p).size for p in photos[:2])
