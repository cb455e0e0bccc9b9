"""A person's flow on the Fine-tune tab: upload a zip of class folders, fine-tune, read before/after, then
classify with the adapted model on the Zero-shot tab and go back to plain zero-shot."""

from __future__ import annotations

import re
import zipfile

import numpy as np
from PIL import Image
from playwright.sync_api import expect


def _labelled_zip(path, per_class: int = 6):
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    with zipfile.ZipFile(path, "w") as archive:
        for name, rgb in colours.items():
            for i in range(per_class):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                image_path = path.parent / f"{name}_{i}.png"
                Image.fromarray(pixels).save(image_path)
                archive.write(image_path, f"{name}/{i}.png")
    return path


def test_finetune_then_classify_with_the_adapter(page, app_url, tmp_path):
    archive = _labelled_zip(tmp_path / "colours.zip")
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("tabpanel").locator("input[type=file]").first.set_input_files(str(archive))
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    # the planner's choice and estimate, shown while it trains (the summary replaces it at the end)
    expect(page.get_by_text(re.compile(r"Plan: about \d+ s: .*epochs x \d+ folds"))).to_be_visible(timeout=60_000)
    # the summary of a finished fine-tune (the page says "before/after" elsewhere while it still runs)
    expect(page.get_by_text(re.compile(r"is now used by the Zero-shot tab"))).to_be_visible(timeout=180_000)
    expect(page.get_by_text(re.compile(r"estimated about \d+ s, took \d+ s"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"before", re.I)).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"after", re.I)).first).to_be_visible()
    expect(page.locator("img[src^='data:image']").first).to_be_visible()  # curves / confusion matrix

    page.get_by_role("tab", name="Zero-shot").click()
    expect(page.get_by_text(re.compile("Using the fine-tuned adapter"))).to_be_visible()
    page.get_by_role("tabpanel").locator("input[type=file]").first.set_input_files(str(tmp_path / "green_0.png"))
    page.get_by_role("button", name="Classify", exact=True).click()
    output = page.locator("[data-testid=label-output-value]")
    expect(output).to_have_count(1)
    expect(output.first).to_have_text(re.compile(r"^\s*(red|green|blue)\s*$"))
    page.get_by_role("button", name=re.compile("Back to plain zero-shot")).click()
    expect(page.get_by_text(re.compile("Using the fine-tuned adapter"))).to_have_count(0)


def test_check_my_labels_shows_suspects_and_drops_the_ticked_ones(page, app_url, tmp_path):
    archive = _labelled_zip(tmp_path / "colours.zip")  # 18 images; the random tiny model doubts many of them
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("tabpanel").locator("input[type=file]").first.set_input_files(str(archive))
    page.get_by_role("button", name="Check my labels").click()
    expect(page.locator("#label-review")).to_contain_text(re.compile("doubts|agrees"), timeout=60_000)
    expect(page.locator("#suspects img").first).to_be_visible()
    first = page.locator("#drop input[type=checkbox]").first
    first.check()
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    expect(page.get_by_text(re.compile(r"is now used by the Zero-shot tab"))).to_be_visible(timeout=180_000)
    expect(page.locator("#finetune-report")).to_contain_text(re.compile(r"n_images\W*17\b"))


def test_the_example_set_loads_in_one_click_and_trains(page, app_url):
    """A new user without a zip: the example button fills the four class rows (names and images), then Fine-tune
    trains on them."""
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("button", name=re.compile("Try an example")).click()
    panel = page.get_by_role("tabpanel")
    for i, name in enumerate(["coat", "pullover", "shirt", "t-shirt"], start=1):
        expect(panel.get_by_label(f"Class {i}", exact=True)).to_have_value(name)
    # 8 files in each class row's file list (the bundled ones, assets/finetune-example/<class>/)
    expect(panel.locator("tbody tr")).to_have_count(32)
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    expect(page.get_by_text(re.compile(r"is now used by the Zero-shot tab"))).to_be_visible(timeout=180_000)
    expect(page.get_by_text(re.compile(r"\(coat, pullover, shirt, t-shirt\)"))).to_be_visible()
