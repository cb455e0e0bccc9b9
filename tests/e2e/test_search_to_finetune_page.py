"""A person's whole loop: search the examples, select results into two classes, fine-tune on them from the Search
tab, read the finished summary on the Fine-tune tab, then classify with the adapter on the Zero-shot tab."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.support.paths import EXAMPLES_DIR

CAPTION = re.compile(r"^-?\d\.\d{3}\s+\S+\.(jpg|png)$")


def _select(page, suffix: str, count: int) -> list[str]:
    """Click `count` results whose file ends in `suffix` (select mode is on) and return their names."""
    selected = page.get_by_label("Selected images (one path per line)")
    names = []
    for i in range(count):
        caption = page.get_by_text(CAPTION).filter(has_text=suffix).nth(i)
        name = caption.inner_text().split()[-1]
        caption.click()
        expect(selected).to_have_value(re.compile(re.escape(name)))
        names.append(name)
    return names


def _add_class(page, name: str, count: int) -> None:
    page.get_by_label("Class name").fill(name)
    page.get_by_role("button", name="Add to class").click()
    expect(page.locator("#collected-classes")).to_contain_text(re.compile(rf"{name}\s*{count}"))
    expect(page.get_by_label("Selected images (one path per line)")).to_have_value("")


def test_search_select_finetune_then_classify(page, app_url):
    page.goto(app_url)
    # A quick run: the head mode (the loop is under test here, not the default's accuracy).
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("Settings (good defaults preset)").click()
    page.get_by_text("Linear head from the zero-shot weights").click()

    page.get_by_role("tab", name="Search").click()
    page.get_by_label("number input for Results (k)").fill("18")  # every example image: 10 clothes, 8 photos
    page.get_by_label("Text query").fill("a photo")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_text(CAPTION)).to_have_count(18)
    page.get_by_label("Select mode: clicking a result").check()
    _select(page, ".png", 3)
    _add_class(page, "clothing", 3)
    _select(page, ".jpg", 3)
    _add_class(page, "photo", 3)

    page.get_by_role("button", name="Fine-tune on these").click()
    expect(page.get_by_role("tab", name="Fine-tune")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_text(re.compile(r"is now used by the Zero-shot tab"))).to_be_visible(timeout=180_000)
    expect(page.get_by_text(re.compile(r"\(clothing, photo\)"))).to_be_visible()

    page.get_by_role("tab", name="Zero-shot").click()
    expect(page.get_by_text(re.compile("Using the fine-tuned adapter"))).to_be_visible()
    page.get_by_role("tabpanel").locator("input[type=file]").first.set_input_files(
        str(EXAMPLES_DIR / "fashion" / "coat.png")
    )
    page.get_by_role("button", name="Classify", exact=True).click()
    output = page.locator("[data-testid=label-output-value]")
    expect(output).to_have_count(1)
    expect(output.first).to_have_text(re.compile(r"^\s*(clothing|photo)\s*$"))
