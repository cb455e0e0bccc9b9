"""A person's flow on the Zero-shot tab: upload images, type labels, click, read the bars, see the heatmap."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect


def test_classify_flow(page, app_url, photos):
    page.goto(app_url)
    expect(page.get_by_text("Model:").first).to_be_visible()
    page.locator("input[type=file]").first.set_input_files([str(p) for p in photos[:2]])
    expect(page.get_by_text(photos[0].name).first).to_be_visible()
    page.get_by_label("Labels (comma or newline separated)").fill("cat, rocket, cup of coffee")
    page.get_by_role("button", name="Classify", exact=True).click()
    # One gr.Label per image, titled with its file name, listing the labels with percentages.
    outputs = page.locator("[data-testid=label-output-value]")
    expect(outputs).to_have_count(2)
    for i in range(2):
        expect(outputs.nth(i)).to_have_text(re.compile(r"^\s*(cat|rocket|cup of coffee|none of these)\s*$"))
    # 3 labels and the "none of these" bar x 2 images
    expect(page.get_by_text(re.compile(r"^\s*\d+%\s*$"))).to_have_count(8)
    expect(page.get_by_text("none of these", exact=True)).to_have_count(2)
    expect(page.locator("#heatmap img").first).to_be_visible()  # drawn by the chained event after Classify


def test_bad_upload_shows_a_message(page, app_url, tmp_path):
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    page.goto(app_url)
    page.locator("input[type=file]").first.set_input_files([str(fake)])
    page.get_by_label("Labels (comma or newline separated)").fill("a, b")
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.get_by_text(re.compile("broken.png: .*(truncated|not an image)"))).to_be_visible()


@pytest.mark.server
def test_demo_model_leads_with_what_it_knows(page, tmp_path):
    """With the bundled demo model, the first examples are clothing it knows, the photos are marked as needing a
    general CLIP model, and 28x28 images are shown enlarged with sharp pixels next to their bars."""
    from clipapp.app.ui.common import AppContext
    from clipapp.model.service import ClipService
    from tests.support.serving import serving

    ctx = AppContext(service=ClipService.load("demo", device="cpu"), state_dir=tmp_path)
    with serving(ctx) as url:
        page.goto(url)
        knows = page.get_by_text("Examples the demo model knows")
        needs = page.get_by_text("Photos: these need a general CLIP model")
        expect(knows).to_be_visible()
        expect(needs).to_be_visible()
        assert knows.bounding_box()["y"] < needs.bounding_box()["y"]  # the examples it knows come first
        page.locator("input[type=file]").first.set_input_files(
            [str(ctx.examples_dir / "fashion" / name) for name in ("sneaker.png", "bag.png")]
        )
        page.get_by_label("Labels (comma or newline separated)").fill("sneaker, bag, dress")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(page.locator("[data-testid=label-output-value]")).to_have_count(2)
        small = page.locator(".pixelated img")
        expect(small).to_have_count(2)
        assert small.first.evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
        # enlarged beyond the file's own size; read once the picture has decoded (a not-yet-loaded <img> is 0 high)
        page.wait_for_function("() => { const e = document.querySelector('.pixelated img'); return e && e.complete; }")
        assert small.first.bounding_box()["height"] > 112


def test_label_warnings_show_next_to_the_labels_box(page, app_url):
    page.goto(app_url)
    labels = page.get_by_label("Labels (comma or newline separated)")
    labels.fill("cat,, dog, Dog")
    labels.blur()
    warnings = page.locator("#label-warnings")
    expect(warnings).to_contain_text("1 empty label(s)")
    expect(warnings).to_contain_text("'Dog' repeats 'dog'")
    labels.fill("cat, dog")
    labels.blur()
    expect(warnings).not_to_contain_text("repeats")


def test_example_thumbnails_fill_the_images_and_labels(page, app_url):
    """The examples are pictures, not file names: clicking one loads its whole set and its labels."""
    from clipapp.app.ui.zero_shot_tab import PHOTO_LABELS

    page.goto(app_url)
    thumbs = page.locator("#examples-photos img")
    expect(thumbs).to_have_count(8)
    expect(page.locator("#examples-fashion img")).to_have_count(10)
    assert thumbs.first.bounding_box()["height"] > 40  # a thumbnail, not an icon
    thumbs.nth(2).click()
    expect(page.get_by_label("Labels (comma or newline separated)")).to_have_value(PHOTO_LABELS)
    expect(page.get_by_text("astronaut.jpg").first).to_be_visible()
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("[data-testid=label-output-value]")).to_have_count(8)
