"""The evaluation report, with its shopper-photo section, opened in a real headless Chromium from disk."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.demo import COLOURS, SHAPES, draw_product
from lookalike.evaluate import evaluate

pytestmark = pytest.mark.browser


def _photos(root: Path) -> Path:
    """Two phone-like photos per shape: the demo's product on a coloured background."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    with (root / "queries.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "expected_articleTypes"])
        for i in range(2 * len(SHAPES)):
            shape = SHAPES[i % len(SHAPES)]
            bg = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(150, 220, 3)))
            bg.paste(draw_product(shape, list(COLOURS.values())[i % len(COLOURS)], rng), (16, 16))
            bg.save(root / "images" / f"p{i}.jpg")
            w.writerow([f"images/p{i}.jpg", shape.title(), shape])
    return root


def test_report_links_to_the_photo_page(browser, shop: tuple[Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rep = evaluate(shop[1], ks=[5], queries=20, grid_queries=2, min_queries=1, out=tmp_path / "rep",
                   photos=_photos(tmp_path / "photos"), show_progress=False)
    page = browser.new_page()
    try:
        page.goto(rep.report_html.as_uri())
        section = page.locator("section#photos")
        assert section.is_visible()
        assert section.locator("table.photo-metrics tr").count() >= 5
        assert section.locator("table.photo-labels tr").count() == 1 + len(SHAPES)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        section.locator("a").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("/photos.html")
        assert page.locator("h1").inner_text().startswith("Photo search:")
        # every photo in the page's grids shows with its 5 results, each marked hit or miss
        n_photos = page.locator(".th.query").count()
        assert n_photos > 0 and page.locator(".th.hit, .th.miss").count() == 5 * 2 * n_photos
        assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    finally:
        page.close()
