"""evaluate_photos() and `lookalike evaluate-photos` on generated "shopper photos" of the tiny catalogue's
shapes: hand-computed metric cases, skipped rows and photos, photos.json and photos.html, the CLI."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.demo import COLOURS, SHAPES, draw_product
from lookalike.encoders.base import Encoder
from lookalike.evaluate import evaluate
from lookalike.evaluate.photos import (
    category_hit,
    evaluate_photos,
    latency_summary,
    mean_or_none,
    precision_at_k,
    read_queries,
)

LABELS = {"circle": "Round", "square": "Box", "triangle": "Pointy", "stripe": "Lines"}
# every shape's photos expect that shape, except "Box", which a shopper would also accept as a triangle
EXPECTED = {"circle": "circle", "square": "square | triangle", "triangle": "triangle", "stripe": "stripe"}
GOOD = 2 * len(SHAPES)  # two photos per shape
BAD_ROWS = {  # path -> (expected_articleTypes, why read_queries must skip the row)
    "../outside.jpg": ("circle", "path escapes the photos folder"),
    "images/missing.jpg": ("circle", "missing file"),
    "images/p0.jpg": ("  |  ", "no expected_articleTypes"),
}


def _photo(shape: str, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A product drawn by the demo, cut out and set off-centre on a coloured 96 px background, like a phone
    photo of the garment on a table."""
    product = draw_product(shape, colour, rng)
    mask = Image.fromarray(((np.asarray(product).min(axis=2) < 240) * 255).astype(np.uint8), "L")
    bg = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(150, 220, 3)))
    bg.paste(product, (int(rng.integers(8, 28)), int(rng.integers(8, 28))), mask)
    return bg


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("shopper")
    root = base / "photos"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(7)
    rows = []
    for i in range(GOOD):
        shape = SHAPES[i % len(SHAPES)]
        colour = list(COLOURS.values())[i % len(COLOURS)]
        _photo(shape, colour, rng).save(root / "images" / f"p{i}.jpg", quality=90)
        rows.append([f"images/p{i}.jpg", LABELS[shape], EXPECTED[shape].replace(" ", ""), str(100 + i)])
    (root / "images" / "broken.jpg").write_bytes(b"this is not a JPEG")
    rows.append(["images/broken.jpg", "Round", "circle", "1"])
    _photo("circle", COLOURS["Red"], rng).save(base / "outside.jpg")  # exists, but outside the folder
    for path, (expected, _) in BAD_ROWS.items():
        rows.append([path, "Round", expected, "2"])
    with (root / "queries.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "expected_articleTypes", "sender_id"])
        w.writerows(rows)
        f.write("images/p1.jpg,Box\n")  # a truncated row
    return root


def test_metric_helpers_by_hand() -> None:
    res = ["circle", "square", "circle", None, "stripe"]
    assert precision_at_k(res, {"circle"}, 5) == pytest.approx(2 / 5)
    assert precision_at_k(res, {"circle", "stripe"}, 3) == pytest.approx(2 / 3)  # the stripe is at rank 5
    assert precision_at_k(res, {"square", "stripe"}, 2) == pytest.approx(1 / 2)
    assert precision_at_k(["circle"], {"circle"}, 4) == pytest.approx(1 / 4)  # missing ranks are misses
    assert precision_at_k([], {"circle"}, 10) == 0.0
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_at_k(res, {"circle"}, 0)
    assert category_hit("Jeans", {"Trousers", "Jeans"}) is True
    assert category_hit("Shirts", {"Trousers", "Jeans"}) is False
    assert category_hit(None, {"Trousers"}) is None
    assert mean_or_none([True, False, None, True]) == pytest.approx(2 / 3)
    assert mean_or_none([None, None]) is None
    # 1..100 ms, numpy's linear interpolation: p50 = 50 + .5, p90 = 90 + .1 * 1, p99 = 99 + .01 * 1
    lat = latency_summary([i / 1000 for i in range(1, 101)])
    assert lat == pytest.approx({"p50_ms": 50.5, "p90_ms": 90.1, "p99_ms": 99.01, "mean_ms": 50.5})
    assert latency_summary([])["p50_ms"] is None


def test_read_queries_skips_and_reports_bad_rows(photos: Path) -> None:
    skipped: list = []
    queries = read_queries(photos, skipped)
    assert len(queries) == GOOD + 1  # the broken photo is a file: only decoding can tell it is bad
    assert all(q.path.is_relative_to(photos.resolve()) and q.path.is_file() for q in queries)
    by_path = {q.rel: q for q in queries}
    assert by_path["images/p1.jpg"].expected == {"square", "triangle"} and by_path["images/p1.jpg"].label == "Box"
    assert by_path["images/p0.jpg"].expected == {"circle"} and by_path["images/p0.jpg"].sender_id == "100"
    reasons = {s.path: s.reason for s in skipped}
    want = {p: why for p, (_, why) in BAD_ROWS.items()}
    assert {p: reasons[p] for p in want} == want
    assert reasons["images/p1.jpg"] == "fewer fields than the header"
    assert len(skipped) == len(BAD_ROWS) + 1 and all(s.row > 1 for s in skipped)


def test_read_queries_refuses_a_folder_without_the_csv(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="queries.csv"):
        read_queries(tmp_path)
    (tmp_path / "queries.csv").write_text("path,label\nimages/a.jpg,Shirt\n")
    with pytest.raises(ValueError, match="expected_articleTypes"):
        read_queries(tmp_path)


def _categories(catalogue: Path) -> dict[str, str]:
    with catalogue.open() as f:
        return {r["id"]: r["category"] for r in csv.DictReader(f)}


def test_evaluate_photos_writes_every_figure(eval_ws: Path, tiny_catalogue: Path, photos: Path) -> None:
    res = evaluate_photos(eval_ws, photos, k=5, show_progress=False, grid_queries=3, worst_labels=2, per_label=1)
    out = eval_ws.resolve() / "reports" / "photos"
    assert res["report"] == {"json": str(out / "photos.json"), "html": str(out / "photos.html")}
    data = json.loads((out / "photos.json").read_text())
    assert data == json.loads(json.dumps({k: v for k, v in res.items() if k != "report"}))
    assert data["encoder"] == json.loads((eval_ws / "build.json").read_text())["encoder"]
    assert data["k"] == 5 and data["routes"] == ["auto", "none"]
    assert data["counts"] == {"rows": GOOD + 1 + len(BAD_ROWS) + 1, "usable_rows": GOOD + 1, "selected": GOOD + 1,
                              "evaluated": GOOD, "skipped_rows": len(BAD_ROWS) + 1, "skipped_photos": 1}
    assert [s["path"] for s in data["skipped"]["photos"]] == ["images/broken.jpg"]
    assert "cannot decode" in data["skipped"]["photos"][0]["reason"]
    assert {s["reason"] for s in data["skipped"]["rows"]} >= {why for _, why in BAD_ROWS.values()}

    cats = _categories(tiny_catalogue)
    for route in ("auto", "none"):
        s = data["results"][route]
        per_query = [q["routes"][route] for q in data["queries"]]
        # every P@k again from the catalogue's own categories of the returned ids
        for q, o in zip(data["queries"], per_query):
            assert len(o["top_ids"]) == 5
            assert o["p_at_k"] == pytest.approx(sum(cats[i] in q["expected"] for i in o["top_ids"]) / 5)
        assert 0.0 <= s["P@5"] <= 1.0 and s["P@5"] == pytest.approx(np.mean([o["p_at_k"] for o in per_query]))
        assert set(s["per_label"]) == set(LABELS.values())
        assert sum(v["queries"] for v in s["per_label"].values()) == s["queries"] == GOOD
        # color-texture has no classifier head: nothing predicted, nothing routed, accuracy undefined
        assert s["category_accuracy"] is None and s["predicted"] == 0 and s["routed_share"] == 0.0
        lat = s["latency"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]

    page = (out / "photos.html").read_text()
    for section in ("metrics", "labels", "random-queries", "worst-labels", "skipped"):
        assert f'id="{section}"' in page, section
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # self-contained
    # 3 random + 2 worst labels x 1 photo, each with 5 results per route, each marked hit or miss
    assert page.count('class="th query"') == 5
    assert page.count('<div class="th hit"') + page.count('<div class="th miss"') == 5 * 2 * 5
    assert "images/broken.jpg" in page and "path escapes the photos folder" in page


def test_routing_on_a_predicted_category(eval_ws: Path, photos: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # an encoder that always says "circle", confidently: auto searches among circles only
    monkeypatch.setattr(Encoder, "predict_category", lambda self, images, top=1: [[("circle", 0.9)] for _ in images])
    res = evaluate_photos(eval_ws, photos, k=5, out=tmp_path, show_progress=False, grid_queries=2)
    auto, none = res["results"]["auto"], res["results"]["none"]
    circle_photos = sum(q["label"] == "Round" for q in res["queries"])
    assert circle_photos == 2
    # right for the circle photos only; their results are all circles (hits), the others' all misses
    assert auto["category_accuracy"] == pytest.approx(circle_photos / GOOD)
    assert auto["P@5"] == pytest.approx(circle_photos / GOOD) and auto["per_label"]["Round"]["P@5"] == 1.0
    assert auto["routed_share"] == 1.0 and auto["predicted"] == GOOD
    assert none["category_accuracy"] is None and none["routed_share"] == 0.0
    assert "circle (90%)" in Path(res["report"]["html"]).read_text()


runner = CliRunner()


def test_evaluate_photos_command(eval_ws: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = runner.invoke(app, ["evaluate-photos", str(eval_ws), str(photos), "--k", "5", "--route", "none",
                            "--limit", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "photos.json").read_text())
    assert data["routes"] == ["none"] and data["counts"]["evaluated"] == 4 and data["limit"] == 4
    s = data["results"]["none"]
    assert f"{s['P@5']:.3f}" in r.output and f"{s['latency']['p50_ms']:.1f}" in r.output
    assert str(out / "photos.html") in r.output and "skipped    4 rows, 0 photos" in r.output


def test_evaluate_photos_bad_input_is_a_usage_error(eval_ws: Path, photos: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["evaluate-photos", str(eval_ws), str(photos), "--route", "auto,fast",
                            "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "route modes" in r.output
    r = runner.invoke(app, ["evaluate-photos", str(eval_ws), str(tmp_path), "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "queries.csv" in r.output
    r = runner.invoke(app, ["evaluate-photos", str(tmp_path / "nothing-built"), str(photos)])
    assert r.exit_code == 2 and "lookalike build" in r.output
    assert not (tmp_path / "a").exists()


def test_the_evaluation_report_includes_photo_search(eval_ws: Path, eval_ws_hnsw: Path, photos: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "ev"
    rep = evaluate(eval_ws, ks=[5], queries=20, compare=[eval_ws_hnsw], out=out, grid_queries=2, photos=photos,
                   show_progress=False)
    ph = rep.data["photos"]
    assert ph["k"] == 5 and ph["dataset"] == str(photos.resolve())
    assert [w["name"] for w in ph["workspaces"]] == [w["name"] for w in rep.data["workspaces"]]
    page = rep.report_html.read_text()
    assert 'id="photos"' in page and "P@5, route auto" in page and "P@5, route none" in page
    for w in ph["workspaces"]:
        # the section's figures are those of the full photo report, which sits next to it and is linked
        full = json.loads((out / w["json"]).read_text())
        assert (out / w["html"]).is_file() and f'href="{w["html"]}"' in page
        assert w["evaluated"] == full["counts"]["evaluated"] == GOOD and w["skipped"] == len(BAD_ROWS) + 2
        for route in ("auto", "none"):
            s = full["results"][route]
            assert w["routes"][route] == {"P@5": s["P@5"], "category_accuracy": s["category_accuracy"],
                                          "routed_share": s["routed_share"], "p50_ms": s["latency"]["p50_ms"],
                                          "p99_ms": s["latency"]["p99_ms"]}
            assert {lab: v[route] for lab, v in w["per_label"].items()} == {
                lab: v["P@5"] for lab, v in s["per_label"].items()}
        assert f"photos     {w['name']}: route auto: P@5={w['routes']['auto']['P@5']:.3f}" in rep.summary()
    assert json.loads(rep.metrics_json.read_text())["photos"] == ph


def test_evaluate_with_a_photo_folder_without_queries_is_a_usage_error(eval_ws: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["evaluate", str(eval_ws), "--photos", str(tmp_path), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2 and "queries.csv" in r.output
    assert not (tmp_path / "ev").exists()  # refused before any work
