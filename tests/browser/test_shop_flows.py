"""The shopper's flows in a real headless Chromium against a real uvicorn server."""
from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def cards(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("ul.grid a.card")


def shot(page: Page, path: Path, full_page: bool = True) -> None:
    """Screenshot once the (lazy) images have arrived, and check that every image has alt text."""
    page.wait_for_load_state("networkidle")
    missing = page.eval_on_selector_all("img:not([hidden])", "els => els.filter(e => !e.alt).map(e => e.src)")
    assert not missing, f"images without alt text: {missing}"
    page.screenshot(path=str(path), full_page=full_page)


def test_catalogue_filter_product_and_similar(page: Page, tmp_path: Path) -> None:
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Catalogue")
    expect(cards(page)).to_have_count(24)
    expect(page.locator("#result-count")).to_contain_text("60 products")
    shot(page, tmp_path / "catalogue.png")

    # filters apply as soon as a select changes (progressive JS), keeping each other
    page.select_option("#category", "circle")
    expect(page).to_have_url(re.compile(r"category=circle"))
    expect(page.locator("#result-count")).to_contain_text("15 products")
    page.select_option("#f-colour", "Red")
    expect(page).to_have_url(re.compile(r"colour=Red"))
    expect(page.locator("#result-count")).to_contain_text("3 products")
    expect(cards(page)).to_have_count(3)
    shot(page, tmp_path / "catalogue-filtered.png")

    # open a product: image, metadata, a carousel of similar items with percentages
    first = cards(page).first
    title = first.locator(".card-title").inner_text()
    first.click()
    expect(page).to_have_url(re.compile(r"/product/p\d+$"))
    expect(page.locator("h1")).to_have_text(title)
    expect(page.locator(".product-img img")).to_have_attribute("alt", title)
    carousel = page.locator("#similar-list")
    expect(carousel.locator("a.card")).to_have_count(12)
    badges = carousel.locator(".badge")
    expect(badges.first).to_have_text(re.compile(r"^\d{1,3}% similar$"))
    assert all(re.fullmatch(r"\d{1,3}% similar", t) for t in badges.all_inner_texts())
    expect(page.locator("#goes-with h2")).to_have_text("Goes with")
    shot(page, tmp_path / "product.png")

    # the carousel scrolls with the keyboard and with its buttons
    carousel.focus()
    before = carousel.evaluate("el => el.scrollLeft")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("([el, x]) => el.scrollLeft > x", arg=[carousel.element_handle(), before])
    expect(page.locator(".carousel-next")).to_be_visible()
    page.locator(".carousel-next").click()
    page.wait_for_function("el => el.scrollLeft > 100", arg=carousel.element_handle())

    # click through to a similar product
    here = page.url
    target = carousel.locator("a.card").nth(1)
    target_title = target.locator(".card-title").inner_text()
    target.click()
    expect(page).not_to_have_url(here)
    expect(page.locator("h1")).to_have_text(target_title)
    expect(page.locator("#similar-list a.card")).to_have_count(12)
    shot(page, tmp_path / "product-2.png")
    assert len(list(tmp_path.glob("*.png"))) == 4


def _events_from(ws: Path, source: str, kind: str, deadline_s: float = 10.0) -> dict[int, str]:
    """position -> product id of the stored ``kind`` events whose similar list was ``source``'s, waiting
    for the browser's batch to land (impressions are sent a second after they are seen)."""
    from lookalike.store import Store

    store = Store.for_workspace(ws)
    deadline = time.monotonic() + deadline_s
    while True:
        found = {pos: pid for typ, pid, src, pos, _ in store.event_counts() if typ == kind and src == source}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_carousel_reports_impressions_and_clicks(page: Page, shop: tuple[Path, Path]) -> None:
    """What re-ranks the similar lists: the carousel reports the cards a shopper saw and the one clicked."""
    page.goto("/product/p0007")
    carousel = page.locator("#similar-list")
    carousel.scroll_into_view_if_needed()
    seen = _events_from(shop[1], "p0007", "impression")
    ids = carousel.locator("li").evaluate_all("els => els.map(e => e.dataset.product)")
    assert len(ids) == 12 and seen and 0 in seen
    assert all(ids[pos] == pid for pos, pid in seen.items())  # each at the slot it was shown in
    assert 11 not in seen  # the last card is off to the right: not seen, not counted
    carousel.locator("a.card").nth(2).click()
    expect(page).to_have_url(re.compile(r"/product/" + re.escape(ids[2]) + "$"))
    assert _events_from(shop[1], "p0007", "click") == {2: ids[2]}


def test_photo_search_upload(page: Page, shop: tuple[Path, Path], tmp_path: Path) -> None:
    photo = shop[0] / "images" / "p0013.png"
    page.goto("/search")
    expect(page.locator("h1")).to_have_text("Search by photo")
    shot(page, tmp_path / "search.png")
    page.set_input_files("#image", str(photo))  # choosing a file searches right away
    expect(page.locator("#search-results")).to_be_visible()
    results = page.locator("#search-results a.card")
    expect(results).to_have_count(10)
    expect(results.first).to_have_attribute("href", "/product/p0013")
    expect(results.first.locator(".badge")).to_have_text(re.compile(r"^\d{1,3}% similar$"))
    expect(page.locator("#query-photo")).to_be_visible()
    expect(page.locator("#preview")).to_be_hidden()
    shot(page, tmp_path / "search-results.png")
    results.nth(2).click()
    expect(page).to_have_url(re.compile(r"/product/p\d+$"))


def test_photo_search_drag_and_drop(page: Page, shop: tuple[Path, Path], tmp_path: Path) -> None:
    data = base64.b64encode((shop[0] / "images" / "p0022.png").read_bytes()).decode()
    page.goto("/search")
    dt = page.evaluate_handle(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            return dt;
        }""", data)
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": dt})
    expect(page.locator("#dropzone")).to_have_class(re.compile("dragover"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dt})
    expect(page.locator("#search-results a.card").first).to_have_attribute("href", "/product/p0022")
    shot(page, tmp_path / "search-dropped.png")


def test_search_error_is_shown(page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo\n" * 20)
    page.goto("/search")
    page.set_input_files("#image", str(bad))
    expect(page.locator("#search-error")).to_contain_text("the upload is not an image")
    shot(page, tmp_path / "search-error.png")


def test_keyboard_only(page: Page, tmp_path: Path) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    # tab to the first product card and open it with Enter
    first = cards(page).first
    for _ in range(40):
        page.keyboard.press("Tab")
        if first.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the first product card is not reachable with Tab")
    outline = first.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none", "focused cards must show a focus outline"
    shot(page, tmp_path / "keyboard-focus.png", full_page=False)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/product/p\d+$"))


def test_works_without_javascript(browser, base_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=base_url, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto("/")
        page.select_option("#f-gender", "Men")
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"gender=Men"))
        expect(page.locator("#result-count")).to_contain_text("30 products")
        page.click("a[rel=next]")
        expect(page).to_have_url(re.compile(r"page=2"))
        expect(cards(page)).to_have_count(6)
        shot(page, tmp_path / "no-js.png")
    finally:
        context.close()
