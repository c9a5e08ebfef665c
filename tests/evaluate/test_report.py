"""evaluate() on tiny built workspaces: metrics.json holds every figure, report.html every section."""
import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lookalike.evaluate import evaluate, parse_ks
from lookalike.evaluate.metrics import METRICS


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_single_workspace_report(eval_ws: Path) -> None:
    rep = evaluate(eval_ws, label="category", ks="5,10", queries=40, grid_queries=4, min_queries=1)
    assert rep.out_dir.parent == eval_ws.resolve() / "reports" and rep.out_dir.name.startswith("evaluate-")
    data = json.loads(rep.metrics_json.read_text())
    w = data["workspaces"][0]
    for k in (5, 10):
        for m in METRICS:
            assert 0.0 <= w["overall"][f"{m}@{k}"] <= 1.0
        assert w["ann"][f"recall@{k}"] == pytest.approx(1.0)
    assert set(w["per_category"]) == {"circle", "square", "triangle", "stripe"}
    assert sum(c["queries"] for c in w["per_category"].values()) == data["queries"] == 40
    assert {"p50_ms", "p95_ms", "p99_ms"} <= set(w["latency"]["index"])
    assert len(data["query_ids"]) == 40

    page = rep.report_html.read_text()
    for section in ("metrics", "ann", "categories", "random-queries", "worst-categories"):
        assert f'id="{section}"' in page, section
    assert page.count("<tr><td>P@10</td>") == 1 and "nDCG@5" in page and "mAP@10" in page
    srcs = _img_sources(page)
    # self-contained: every image is an embedded data URI, none a file or URL
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    bars = re.search(r'<img class="bars"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert bars and Image.open(io.BytesIO(base64.b64decode(bars.group(1)))).format == "PNG"
    # 4 random rows + worst categories (up to 3 rows each), each with the query and 10 marked results
    n_rows = page.count('class="th query"')
    assert n_rows >= 4 and page.count('class="th hit"') + page.count('class="th miss"') == 10 * n_rows
    assert page.count('data-workspace="') == n_rows  # one column per query row: nothing compared


def test_compare_runs_the_same_queries_over_shared_ids(eval_ws: Path, eval_ws_hnsw: Path, tmp_path: Path) -> None:
    rep = evaluate(eval_ws, ks=[10], queries=30, compare=[eval_ws_hnsw], out=tmp_path / "cmp", grid_queries=3)
    assert rep.report_html == tmp_path / "cmp" / "report.html"
    data = rep.data
    assert data["shared_products"] == 100  # the second workspace holds only the first 100 products
    assert all(int(q[1:]) < 100 for q in data["query_ids"])
    a, b = data["workspaces"]
    assert a["name"] != b["name"] and b["ann"]["backend"] == "hnswlib"
    # both encode with color-texture over the same ids: the exact rankings, and so the metrics, agree
    assert a["overall"] == b["overall"]
    page = rep.report_html.read_text()
    n_rows = page.count('class="th query"')
    assert page.count(f'data-workspace="{a["name"]}"') == n_rows == page.count(f'data-workspace="{b["name"]}"')
    assert page.count('<th class="ws-col">') == 2 * (1 + len(re.findall(r"<h3>[^<]*P@10", page)))


def test_bad_arguments_say_what_to_fix(eval_ws: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="comma-separated list of positive integers"):
        parse_ks("5,ten")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_ks("0,5")
    assert parse_ks("20, 5,10,5") == [5, 10, 20]
    with pytest.raises(ValueError, match="has label 'nope'"):
        evaluate(eval_ws, label="nope", queries=5, out=tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no build.json"):
        evaluate(eval_ws, queries=5, compare=[tmp_path / "empty"], out=tmp_path / "y")


def test_missing_images_become_placeholders(tiny_catalogue: Path, tmp_path: Path) -> None:
    import shutil

    from lookalike.pipeline import build

    cat = tmp_path / "cat"
    shutil.copytree(tiny_catalogue.parent, cat)
    build(cat / "catalogue.csv", tmp_path / "ws", encoder="color-texture", k=3, show_progress=False)
    for p in (cat / "images").glob("p00[0-4]*.png"):
        p.unlink()  # images deleted after the build: the report must still render
    rep = evaluate(tmp_path / "ws", queries=120, ks="3", out=tmp_path / "out", grid_queries=120)
    assert rep.data["thumbnail_failures"] == 50
    assert "50 thumbnails could not be read" in rep.report_html.read_text()
