"""The "Goes with" section of a product page in a real headless Chromium."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_goes_with_section_links_to_other_categories(page: Page) -> None:
    page.goto("/product/p0000")  # a circle
    section = page.locator("#goes-with")
    expect(section.locator("h2")).to_have_text("Goes with")
    groups = section.locator(".goes-with-group")
    expect(groups).to_have_count(3)
    categories = groups.evaluate_all("els => els.map(e => e.dataset.category)")
    assert "circle" not in categories and len(set(categories)) == 3
    first = groups.first
    expect(first.locator("a.card")).to_have_count(4)
    alts = first.locator("img").evaluate_all("els => els.map(e => e.alt)")
    assert all(alts), "every goes-with image has alt text"
    # a goes-with card opens a product of the category it was listed under
    first.locator("a.card").first.click()
    expect(page).to_have_url(re.compile(r"/product/p\d+$"))
    expect(page.locator(".meta")).to_contain_text(categories[0])
