"""``evaluate_photos()``: photo search scored on real shopper photos (``lookalike evaluate-photos``).

The dataset is a folder holding ``queries.csv`` (``path,label,expected_articleTypes,sender_id``) and the
photos it names. A result is relevant when its category (the catalogue's articleType) is one of the row's
``|``-joined expected types. Every photo goes through ``Recommender.search``, the call the service makes,
once per route mode, so the figures are what a shopper gets and show what routing by predicted category adds.
Output: ``photos.json`` (every figure) and ``photos.html`` in ``WS/reports/photos/`` unless ``out`` is given.
"""
from __future__ import annotations

import csv
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lookalike.imaging import UnsafePathError, load_image, safe_join
from lookalike.io_utils import atomic_write, write_json
from lookalike.recommender import Recommender

log = logging.getLogger(__name__)

QUERIES_CSV = "queries.csv"
REQUIRED_COLUMNS = ("path", "label", "expected_articleTypes")
ROUTES = ("auto", "none")


@dataclass(frozen=True)
class PhotoQuery:
    row: int  # line of queries.csv, so a skipped or surprising photo can be found again
    rel: str  # the path as queries.csv writes it: stable across machines, unlike ``path``
    path: Path  # resolved, inside the photos folder
    label: str
    expected: frozenset[str]
    sender_id: str | None = None


@dataclass(frozen=True)
class Skipped:
    row: int
    path: str
    reason: str


@dataclass
class Outcome:
    """One photo searched under one route mode."""

    ids: list[str]
    categories: list[str | None]
    pct: list[float]
    hits: list[bool]
    p_at_k: float
    predicted: tuple[str, float] | None
    category_hit: bool | None
    routed: list[str] | None
    seconds: float  # decode + encode + search: what a caller waits for
    encode_s: float
    search_s: float


# ---- reading the dataset ----------------------------------------------------------------------------
def queries_csv(photos_dir: Path) -> Path:
    """``photos_dir/queries.csv``; FileNotFoundError saying what the folder must hold when it is missing."""
    csv_path = Path(photos_dir) / QUERIES_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: PHOTOS_DIR must hold {QUERIES_CSV} and the photos it lists")
    return csv_path


def read_queries(photos_dir: Path, skipped: list[Skipped] | None = None) -> list[PhotoQuery]:
    """The usable rows of ``photos_dir/queries.csv``. A malformed row, a path escaping the folder or a
    missing photo is skipped, logged and appended to ``skipped`` when given; only a missing queries.csv or
    a missing required column is fatal, since then no row can be read."""
    root = Path(photos_dir).resolve()
    csv_path = queries_csv(root)
    bad: list[Skipped] = []
    out: list[PhotoQuery] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's BOM would hide 'path'
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks column(s) {missing}; it has {reader.fieldnames}")
        for row in reader:
            rel = (row.get("path") or "").strip()
            reason = _row_problem(row)
            path = root
            if reason is None:
                try:
                    path = safe_join(root, rel)
                except UnsafePathError:
                    reason = "path escapes the photos folder"
                else:
                    if not path.is_file():
                        reason = "missing file"
            if reason is not None:
                bad.append(Skipped(reader.line_num, rel, reason))
                continue
            expected = frozenset(t.strip() for t in row["expected_articleTypes"].split("|") if t.strip())
            out.append(PhotoQuery(reader.line_num, rel, path, row["label"].strip(), expected,
                                  (row.get("sender_id") or "").strip() or None))
    for s in bad:
        log.warning("%s line %d (%s) skipped: %s", csv_path.name, s.row, s.path or "no path", s.reason)
    if bad:
        log.warning("%d of %d rows of %s skipped", len(bad), len(bad) + len(out), csv_path)
    if skipped is not None:
        skipped.extend(bad)
    return out


def _row_problem(row: dict[str | None, Any]) -> str | None:
    if None in row:  # DictReader files surplus fields under the key None
        return "more fields than the header"
    if any(row.get(c) is None for c in REQUIRED_COLUMNS):
        return "fewer fields than the header"
    if not row["path"].strip():
        return "empty path"
    if not row["label"].strip():
        return "empty label"
    if not any(t.strip() for t in row["expected_articleTypes"].split("|")):
        return "no expected_articleTypes"
    return None


# ---- metrics (pure) ---------------------------------------------------------------------------------
def precision_at_k(categories: Sequence[str | None], expected: Collection[str], k: int) -> float:
    """Share of the top ``k`` results whose category is expected. Ranks past the end of a short list are
    misses (as in evaluate/metrics.py), so returning fewer than k results is never rewarded."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return sum(c is not None and c in expected for c in categories[:k]) / k


def category_hit(predicted: str | None, expected: Collection[str]) -> bool | None:
    """Whether the predicted category is expected; None when nothing was predicted, which is no evidence
    either way (the encoder may have no classifier head, or the route mode did not ask)."""
    return None if predicted is None else predicted in expected


def mean_or_none(values: Iterable[float | bool | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean in ms (numpy's linear interpolation); None for an empty list."""
    if not len(seconds):
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 2), "p90_ms": round(float(p90), 2), "p99_ms": round(float(p99), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def summarise_route(queries: Sequence[PhotoQuery], outcomes: Sequence[Outcome], k: int) -> dict[str, Any]:
    """Every figure of one route mode; ``queries[i]`` was searched as ``outcomes[i]``."""
    pk = f"P@{k}"
    per_label: dict[str, dict[str, Any]] = {}
    for label in sorted({q.label for q in queries}):
        mine = [o for q, o in zip(queries, outcomes) if q.label == label]
        per_label[label] = {"queries": len(mine), pk: mean_or_none(o.p_at_k for o in mine),
                            "category_accuracy": mean_or_none(o.category_hit for o in mine)}
    predicted = [o for o in outcomes if o.category_hit is not None]
    return {
        "queries": len(outcomes),
        pk: mean_or_none(o.p_at_k for o in outcomes),
        # labels are unbalanced (100 shirts, 17 hoodies): the label mean weighs each kind of garment alike
        f"{pk}_label_mean": mean_or_none(v[pk] for v in per_label.values()),
        "category_accuracy": mean_or_none(o.category_hit for o in predicted),
        "predicted": len(predicted),
        "routed_share": mean_or_none(bool(o.routed) for o in outcomes),
        "short_results": sum(len(o.ids) < k for o in outcomes),
        "latency": latency_summary([o.seconds for o in outcomes]),
        "encode_latency": latency_summary([o.encode_s for o in outcomes]),
        "search_latency": latency_summary([o.search_s for o in outcomes]),
        "per_label": per_label,
    }


# ---- the run ----------------------------------------------------------------------------------------
def _check_routes(k: int, routes: Sequence[str] | str, limit: int | None) -> tuple[str, ...]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    names = [r.strip() for r in routes.split(",")] if isinstance(routes, str) else [str(r).strip() for r in routes]
    picked = tuple(dict.fromkeys(r for r in names if r))
    bad = [r for r in picked if r not in ROUTES]
    if not picked or bad:
        raise ValueError(f"route modes must be among {', '.join(ROUTES)}; got {list(names)}")
    return picked


def _search(rec: Recommender, img: Image.Image, q: PhotoQuery, k: int, route: str, decode_s: float) -> Outcome:
    t = time.perf_counter()
    res = rec.search(img, k=k, route=route)
    seconds = decode_s + time.perf_counter() - t
    cats = [it.product.category for it in res.items]
    pred = res.predicted_category
    return Outcome(ids=[it.product.id for it in res.items], categories=cats,
                   pct=[float(it.similarity_pct) for it in res.items],
                   hits=[c is not None and c in q.expected for c in cats[:k]],
                   p_at_k=precision_at_k(cats, q.expected, k), predicted=pred,
                   category_hit=category_hit(pred[0] if pred else None, q.expected),
                   routed=list(res.searched_categories) if res.searched_categories else None, seconds=seconds,
                   encode_s=res.timings.get("encode", 0.0), search_s=res.timings.get("search", 0.0))


def _category_predictor(rec: Recommender) -> str:
    """What predicted the categories of route=auto (Recommender._encode_and_predict), for the report."""
    if rec.router is None:
        return "the encoder"
    return f"router {rec.router.encoder_name}, {rec.router.features} ({len(rec.router.classes)} categories)"


def evaluate_photos(workspace: Path, photos_dir: Path, k: int = 10, routes: Sequence[str] | str = ROUTES,
                    limit: int | None = None, out: Path | None = None, show_progress: bool = True, seed: int = 0,
                    grid_queries: int = 12, worst_labels: int = 4, per_label: int = 3) -> dict[str, Any]:
    """Search every photo of ``photos_dir`` (the first ``limit`` usable ones) in ``workspace`` under each
    route mode; write photos.json and photos.html; return the JSON's content plus ``report`` paths."""
    from lookalike.evaluate.photos_html import render_report  # the page needs this module's types

    t0 = time.perf_counter()
    route_modes = _check_routes(k, routes, limit)
    photos_root = Path(photos_dir).resolve()
    skipped_rows: list[Skipped] = []
    usable = read_queries(photos_root, skipped_rows)
    selected = usable[:limit] if limit else usable
    if not selected:
        raise ValueError(f"no usable photo in {photos_root / QUERIES_CSV} ({len(skipped_rows)} rows skipped)")
    rec = Recommender.open(workspace)
    done: list[PhotoQuery] = []
    outcomes: dict[str, list[Outcome]] = {r: [] for r in route_modes}
    skipped_photos: list[Skipped] = []
    warm = False
    for q in tqdm(selected, desc="photo search", unit="photo", disable=not show_progress):
        try:
            t = time.perf_counter()
            img = load_image(q.path)
            decode_s = time.perf_counter() - t  # decoded once, charged to every route mode alike
            if not warm:
                # the first calls pay one-off costs (session allocation, lazy imports) that no shopper
                # sees twice; left in, they would be the p99
                for r in route_modes:
                    rec.search(img, k=k, route=r)
                warm = True
            # all modes or none, so every mode is scored on the same photos
            got = {r: _search(rec, img, q, k, r, decode_s) for r in route_modes}
        except (OSError, ValueError) as e:
            skipped_photos.append(Skipped(q.row, q.rel, str(e) or type(e).__name__))
            log.warning("photo %s skipped: %s", q.rel, e)
            continue
        done.append(q)
        for r in route_modes:
            outcomes[r].append(got[r])
    if not done:
        raise ValueError(f"none of the {len(selected)} selected photos could be searched (see the log)")

    results = {r: summarise_route(done, outcomes[r], k) for r in route_modes}
    data: dict[str, Any] = {
        "dataset": str(photos_root), "workspace": str(rec.workspace.root),
        "encoder": rec.build_info.get("encoder", rec.encoder_name), "k": k, "routes": list(route_modes),
        "category_predictor": _category_predictor(rec),
        "limit": limit, "seed": seed,
        "relevance": "a result is relevant when its category (articleType) is one of the photo's "
                     "expected_articleTypes; category accuracy: the predicted category is one of them",
        "latency_covers": "decode + encode + search of one photo, one call at a time, after one warm-up",
        "counts": {"rows": len(usable) + len(skipped_rows), "usable_rows": len(usable), "selected": len(selected),
                   "evaluated": len(done), "skipped_rows": len(skipped_rows), "skipped_photos": len(skipped_photos)},
        "skipped": {"rows": [asdict(s) for s in skipped_rows], "photos": [asdict(s) for s in skipped_photos]},
        "results": results,
        "queries": [{"row": q.row, "path": q.rel, "label": q.label, "expected": sorted(q.expected),
                     "routes": {r: _outcome_json(outcomes[r][i]) for r in route_modes}}
                    for i, q in enumerate(done)],
    }
    out_dir = Path(out) if out else rec.workspace.reports_dir / "photos"
    out_dir.mkdir(parents=True, exist_ok=True)
    page, thumb_failures = render_report(data, done, outcomes, rec.image_path, seed=seed,
                                         grid_queries=grid_queries, worst_labels=worst_labels, per_label=per_label)
    data["thumbnail_failures"] = thumb_failures
    data["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    data["runtime_s"] = round(time.perf_counter() - t0, 1)
    html_path, json_path = out_dir / "photos.html", out_dir / "photos.json"
    atomic_write(html_path, lambda p: p.write_text(page, encoding="utf-8"))
    write_json(json_path, data)
    log.info("scored %d photos (%d skipped) in %.1f s: wrote %s (%.2f MB) and %s", len(done),
             len(skipped_rows) + len(skipped_photos), data["runtime_s"], html_path,
             html_path.stat().st_size / 1e6, json_path)
    return {**data, "report": {"json": str(json_path), "html": str(html_path)}}


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {"p_at_k": o.p_at_k, "predicted": list(o.predicted) if o.predicted else None,
            "category_hit": o.category_hit, "routed_to": o.routed, "ms": round(o.seconds * 1000, 2),
            "top_ids": o.ids, "top_categories": o.categories}


def label_accuracy(results: dict[str, dict[str, Any]], label: str) -> float | None:
    """A label's category accuracy under the first route mode that predicts one (``none`` predicts nothing)."""
    return next((s["per_label"][label]["category_accuracy"] for s in results.values()
                 if s["per_label"][label]["category_accuracy"] is not None), None)


def photo_summary(res: dict[str, Any], relative_to: Path) -> dict[str, Any]:
    """The headline figures of one ``evaluate_photos`` result, for the section of the evaluation report that
    shows it; the full page and JSON are linked relative to the report's folder."""
    pk = f"P@{res['k']}"
    routes = res["results"]
    first = next(iter(routes.values()))
    return {
        "encoder": res["encoder"], "category_predictor": res["category_predictor"], "k": res["k"],
        "evaluated": res["counts"]["evaluated"],
        "skipped": res["counts"]["skipped_rows"] + res["counts"]["skipped_photos"],
        "html": Path(res["report"]["html"]).relative_to(relative_to).as_posix(),
        "json": Path(res["report"]["json"]).relative_to(relative_to).as_posix(),
        "routes": {r: {pk: s[pk], "category_accuracy": s["category_accuracy"], "routed_share": s["routed_share"],
                       "p50_ms": s["latency"]["p50_ms"], "p99_ms": s["latency"]["p99_ms"]} for r, s in routes.items()},
        "per_label": {lab: {"queries": v["queries"], **{r: s["per_label"][lab][pk] for r, s in routes.items()},
                            "category_accuracy": label_accuracy(routes, lab)}
                      for lab, v in first["per_label"].items()},
    }
