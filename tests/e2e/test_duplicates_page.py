"""The Search tab's near-duplicates view shows a known group: a photo, its byte copy and a half-size copy."""

from __future__ import annotations

import re

from PIL import Image
from playwright.sync_api import expect

from clipapp.app.ui.common import AppContext
from tests.support.serving import serving


def test_duplicates_view_shows_a_known_group(page, tiny_service, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    for photo in photos[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "copy.jpg").write_bytes(photos[0].read_bytes())
    with Image.open(photos[0]) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(folder / "small.jpg", quality=70)
    ctx = AppContext(service=tiny_service, state_dir=tmp_path / "state", allowed_roots=(folder,))
    with serving(ctx) as url:
        page.goto(url)
        page.get_by_role("tab", name="Search").click()
        page.get_by_label("Index").click()
        page.get_by_role("option", name=str(folder)).click()
        page.get_by_text("Near-duplicates in this index").click()
        page.get_by_role("button", name="Find near-duplicates").click()
        group = page.locator(".dup-group").filter(has_text=str(folder / "copy.jpg"))
        expect(group).to_have_count(1)
        expect(group).to_contain_text(str(folder / photos[0].name))
        expect(group.locator("img")).not_to_have_count(0)
        expect(group.locator(".dup-keep")).to_have_count(1)  # one suggested keeper, marked
        expect(group).to_contain_text(re.compile(r"\d+x\d+, \d+ kB"))
