"""A person's flow on the Search tab: build the examples index, search by text, then click a result."""

from __future__ import annotations

import re

from playwright.sync_api import expect


def test_search_by_text_then_by_clicking_a_result(page, app_url):
    page.goto(app_url)
    page.get_by_role("tab", name="Search").click()
    page.get_by_role("button", name="Build / update index").click()
    expect(page.get_by_text(re.compile(r'"total":\s*\d+|total'))).not_to_have_count(0)
    page.get_by_label("Text query").fill("a cat")
    page.get_by_role("button", name="Search", exact=True).click()
    captions = page.get_by_text(re.compile(r"^-?\d\.\d{3}\s+\S+\.(jpg|png)$"))
    expect(captions).to_have_count(12)  # k = 12 results, each captioned "score name"
    scores = [float(text.split()[0]) for text in captions.all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    # Click the third result: the gallery is replaced by the results for that image, itself first (score 1).
    clicked_name = captions.nth(2).inner_text().split()[-1]
    captions.nth(2).click()
    expect(captions.first).to_have_text(re.compile(rf"^1\.000\s+{re.escape(clicked_name)}$"))
