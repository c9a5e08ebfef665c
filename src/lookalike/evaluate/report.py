"""``evaluate()``: same-label retrieval metrics of one or more workspaces, as metrics.json + report.html.

Output folder: ``WS/reports/evaluate-<UTC timestamp>/`` unless ``out`` is given. With ``compare``, every
workspace is scored on the same query ids, over the product ids all of them hold, so columns are comparable.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.evaluate import html
from lookalike.evaluate.metrics import METRICS
from lookalike.evaluate.photos import evaluate_photos, photo_summary, queries_csv
from lookalike.evaluate.retrieval import LoadedWorkspace, RetrievalResult, evaluate_retrieval, select_queries
from lookalike.io_utils import atomic_write, write_json
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    out_dir: Path
    metrics_json: Path
    report_html: Path
    data: dict[str, Any]

    def summary(self) -> str:
        k = self.data["headline_k"]
        d = self.data
        lines = [f"queries    {d['queries']} (label {d['label']!r}, seed {d['seed']}; from {d['queries_from']})"]
        for w in self.data["workspaces"]:
            o, lat = w["overall"], w["latency"].get("index") or w["latency"]["exact"]
            lines.append(f"{w['name']:<10} {w['encoder']}: " + "  ".join(f"{m}@{k}={o[f'{m}@{k}']:.3f}" for m in METRICS)
                         + f"  ANN recall@{k}={w['ann'].get(f'recall@{k}', 'n/a')}"
                         + f"  latency p50/p95/p99={lat.get('p50_ms')}/{lat.get('p95_ms')}/{lat.get('p99_ms')} ms")
        for w in (self.data.get("photos") or {}).get("workspaces", []):
            pk = f"P@{self.data['photos']['k']}"
            lines.append(f"photos     {w['name']}: " + "  ".join(
                f"route {r}: {pk}={_fmt(s[pk], '.3f')} accuracy={_fmt(s['category_accuracy'], '.3f')} p50={s['p50_ms']} ms"
                for r, s in w["routes"].items()) + f"  ({w['evaluated']} photos, page {w['html']})")
        lines.append(f"report     {self.report_html}  ({self.report_html.stat().st_size / 1e6:.2f} MB)")
        lines.append(f"metrics    {self.metrics_json}")
        return "\n".join(lines)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def parse_ks(spec: str | Sequence[int]) -> list[int]:
    """``"5,10,20"`` or a sequence -> sorted distinct positive ints."""
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    try:
        ks = sorted({int(p) for p in parts if str(p) != ""})
    except ValueError:
        raise ValueError(f"k must be a comma-separated list of positive integers, e.g. 5,10,20; got {spec!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be a comma-separated list of positive integers, e.g. 5,10,20; got {spec!r}")
    return ks


def _unique_names(roots: list[Path]) -> list[str]:
    names: list[str] = []
    for r in roots:
        name = Path(r).resolve().name
        names.append(name if name not in names else f"{name}#{len(names) + 1}")
    return names


def evaluate(workspace: Path, label: str = "category", ks: Sequence[int] | str = (5, 10, 20), queries: int = 1000,
             compare: Sequence[Path] = (), out: Path | None = None, seed: int = 0, grid_queries: int = 12,
             worst_categories: int = 5, per_worst: int = 3, min_queries: int = 3, latency_queries: int = 500,
             store_url: str | None = None, photos: Path | None = None, show_progress: bool = True
             ) -> EvaluationReport:
    """Score same-``label`` retrieval of ``workspace`` (and of each ``compare`` workspace); write the report.

    With ``photos`` (a folder in the shopper-photos layout), every workspace's photo search is scored on it
    too (``evaluate_photos``, at the report's headline k): its full page lands in ``photos/<name>/`` next to
    the report, and the report gains a section with the headline figures and a link to that page."""
    t0 = time.perf_counter()
    ks = parse_ks(ks)
    if photos is not None:
        queries_csv(photos)  # refuse a wrong folder before any work
    roots = [Path(workspace), *map(Path, compare)]
    names = _unique_names(roots)
    loaded = [LoadedWorkspace.open(r, n, store_url if i == 0 else None) for i, (r, n) in enumerate(zip(roots, names))]
    main = loaded[0]
    held = set(main.ids).intersection(*(set(w.ids) for w in loaded[1:]))
    shared = [pid for pid in main.ids if pid in held]
    if not shared:
        raise ValueError("the compared workspaces share no product id: compare builds of the same catalogue")
    all_labels = dict(zip(main.ids, main.labels(label)))
    labels = {pid: all_labels[pid] for pid in shared}
    among, query_source = held_out_queries(loaded)
    query_ids, skipped = select_queries(shared, [labels[p] for p in shared], queries, seed, among)
    log.info("evaluating %d queries on %d workspace(s) over %d shared products", len(query_ids), len(loaded),
             len(shared))
    results = [evaluate_retrieval(w, query_ids, shared, labels, ks, latency_queries) for w in loaded]

    hk = 10 if 10 in ks else ks[len(ks) // 2]
    bar_metric = f"P@{hk}"
    per_cat = results[0].per_category
    cats = [c for c, v in per_cat.items() if v["queries"] >= min_queries] or list(per_cat)
    cats.sort(key=lambda c: (per_cat[c][bar_metric], c))
    data: dict[str, Any] = {
        "label": label, "ks": ks, "headline_k": hk, "seed": seed, "queries": len(query_ids),
        "eligible_products": len(shared) - sum(skipped.values()), "shared_products": len(shared),
        "not_eligible": skipped, "queries_from": query_source, "ranking": "exact inner-product search, query excluded",
        "workspaces": [_ws_json(w, r, len(lw.ids)) for w, r, lw in zip(names, results, loaded)],
        "query_ids": query_ids,
    }

    out_dir = Path(out) if out else Workspace(main.root).reports_dir / f"evaluate-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbs = html.Thumbnails(lambda pid: next((p for w in loaded if (p := w.image_path(pid))), None))
    rng = np.random.default_rng(seed + 1)
    random_rows = np.sort(rng.permutation(len(query_ids))[:grid_queries])
    worst = []
    for c in cats[:worst_categories]:
        rows = [i for i, lab in enumerate(results[0].query_labels) if lab == c][:per_worst]
        worst.append({"name": c, "value": per_cat[c][bar_metric], "queries": per_cat[c]["queries"],
                      "rows": _grid_rows(rows, results, labels, thumbs, hk)})
    context = {
        "title": " vs ".join(names), "label": label, "n_queries": len(query_ids), "seed": seed,
        "query_source": query_source,
        "n_eligible": data["eligible_products"], "n_shared": len(shared), "ks": ks, "grid_k": hk,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "workspaces": data["workspaces"],
        "metric_names": [f"{m}@{k}" for k in ks for m in METRICS], "bar_metric": bar_metric,
        "min_queries": min_queries, "random_rows": _grid_rows(random_rows, results, labels, thumbs, hk),
        "worst": worst,
        "bars_uri": html.png_uri(html.category_bars({r.name: r.per_category for r in results}, bar_metric, cats)),
    }
    if photos is not None:
        runs = [{"name": name, **photo_summary(evaluate_photos(w.root, photos, k=hk, out=out_dir / "photos" / name,
                                                               show_progress=show_progress, seed=seed), out_dir)}
                for w, name in zip(loaded, names)]
        data["photos"] = {"dataset": str(Path(photos).resolve()), "k": hk, "workspaces": runs}
    context["photos"] = _photo_context(data["photos"]) if photos is not None else None
    data["thumbnail_failures"] = len(thumbs.failed)
    data["runtime_s"] = context["runtime_s"] = round(time.perf_counter() - t0, 1)
    context["thumbnail_failures"] = len(thumbs.failed)
    report_html = out_dir / "report.html"
    page = html.render(context)
    atomic_write(report_html, lambda p: p.write_text(page, encoding="utf-8"))
    metrics_json = out_dir / "metrics.json"
    write_json(metrics_json, data)
    log.info("wrote %s (%.2f MB) and %s", report_html, report_html.stat().st_size / 1e6, metrics_json)
    return EvaluationReport(out_dir, metrics_json, report_html, data)


def held_out_queries(loaded: Sequence[LoadedWorkspace]) -> tuple[set[str] | None, str]:
    """Where queries may come from: the products every ``trained:`` encoder held out from its training (a
    model has seen the rest, which would flatter it), and a sentence saying so for the report."""
    from lookalike.encoders.trained import find_model_dir
    from lookalike.training.data import heldout_ids

    among: set[str] | None = None
    notes = []
    for w in loaded:
        if not w.encoder.startswith("trained:"):
            continue
        try:
            held = heldout_ids(find_model_dir(Path(w.encoder.split(":", 1)[1])))
        except (FileNotFoundError, KeyError, ValueError):
            held = None
        if held is None:
            notes.append(f"{w.name}'s encoder was trained on this catalogue and its held-out split could not be "
                         "recovered: its figures may be flattered by products it trained on")
            log.warning(notes[-1])
            continue
        among = held if among is None else among & held
        notes.append(f"the {len(held)} products {w.encoder} held out from its training")
    return among, "; ".join(notes) or "any product"


def _photo_context(photos: dict[str, Any]) -> dict[str, Any]:
    """Table rows of the report's photo section: one column per workspace, as in the metrics table."""
    runs, pk = photos["workspaces"], f"P@{photos['k']}"
    rows = [("photos searched", [str(w["evaluated"]) for w in runs])]
    for r in runs[0]["routes"]:
        rows += [(f"{pk}, route {r}", [_fmt(w["routes"][r][pk]) for w in runs]),
                 (f"category accuracy, route {r}", [_fmt(w["routes"][r]["category_accuracy"]) for w in runs]),
                 (f"routed into a category, route {r}", [_fmt(w["routes"][r]["routed_share"], ".0%") for w in runs]),
                 (f"latency p50 / p99 ms, route {r}",
                  [f"{_fmt(w['routes'][r]['p50_ms'], '.1f')} / {_fmt(w['routes'][r]['p99_ms'], '.1f')}" for w in runs])]
    rows = [(name, cells) for name, cells in rows if any(c != "n/a" for c in cells)]  # e.g. no guess under none
    first = runs[0]["routes"]
    labels = sorted(runs[0]["per_label"], key=lambda lab: (runs[0]["per_label"][lab][next(iter(first))] or 0, lab))

    def cell(v: dict[str, Any]) -> str:
        acc = v["category_accuracy"]
        return " / ".join(_fmt(v.get(r), ".2f") for r in first) + ("" if acc is None else f" (accuracy {acc:.2f})")

    label_rows = [(f"{lab} ({runs[0]['per_label'][lab]['queries']})", [cell(w["per_label"][lab]) for w in runs])
                  for lab in labels]
    return {**photos, "pk": pk, "route_names": " / ".join(first), "rows": rows, "label_rows": label_rows}


def _ws_json(name: str, r: RetrievalResult, n_products: int) -> dict[str, Any]:
    return {"name": name, "encoder": r.encoder, "products": n_products, "overall": r.overall,
            "per_category": r.per_category, "ann": r.ann, "latency": r.latency, "timings_s": r.timings_s}


def _grid_rows(rows: Sequence[int], results: list[RetrievalResult], labels: dict[str, str | None],
               thumbs: html.Thumbnails, k: int) -> list[dict[str, Any]]:
    """One grid row per query: the query thumbnail, then one column of top-k thumbnails per workspace."""
    out = []
    for i in rows:
        qid = results[0].query_ids[i]
        cols = []
        for r in results:
            items = [{"id": pid, "label": labels.get(pid) or "(none)", "hit": bool(r.hits[i, j]), "uri": thumbs(pid)}
                     for j, pid in enumerate(r.top_ids[i][:k])]
            cols.append({"name": r.name, "results": items, "n_hits": sum(t["hit"] for t in items)})
        out.append({"query_id": qid, "label": labels[qid], "query_uri": thumbs(qid), "columns": cols})
    return out
