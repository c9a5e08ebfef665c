"""The self-contained ``photos.html`` of ``evaluate_photos``: metrics per route mode, P@k per label, and
grids of shopper photos with their results, built on the helpers of evaluate/html.py (thumbnails, chart,
stylesheet) so both evaluation reports look and behave alike."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from lookalike.evaluate import html
from lookalike.evaluate.photos import Outcome, PhotoQuery, label_accuracy

PHOTO_PX = 110  # the shopper photo is the thing being judged: shown larger than the results

EXTRA_STYLE = """
.res { display: flex; flex-direction: column; align-items: center; }
.route { margin: 2px 0 8px; }
.route b { font-size: 12px; }
.labels td:nth-child(3), .grid th { text-align: left; }
"""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lookalike photo search: {{ title }}</title>
<style>{{ style }}</style></head><body>
<h1>Photo search: {{ title }}</h1>
<p class="note">{{ n_evaluated }} shopper photos from <b>{{ dataset }}</b> searched in <b>{{ workspace }}</b>
(encoder <b>{{ encoder }}</b>, categories predicted by {{ predictor }}), top-{{ k }} per photo, once per route mode: <i>auto</i> searches within the
predicted category when the prediction is confident, <i>none</i> searches the whole catalogue. A result is a hit
when its articleType is one of the photo's expected types. Latency is decode + encode + search of one photo.
{% if n_skipped %}{{ n_skipped }} rows or photos were skipped (listed at the end).{% endif %}
Created {{ created_at }}.</p>

<section id="metrics"><h2>Metrics</h2>
<table class="metrics"><tr><th>figure</th>{% for r in routes %}<th>route {{ r }}</th>{% endfor %}</tr>
{% for name, cells in metric_rows %}<tr><td>{{ name }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table></section>

<section id="labels"><h2>Per label: {{ pk }}</h2>
<p class="note">Worst first (by route {{ routes[0] }}); queries per label in brackets.</p>
<img class="bars" alt="{{ pk }} per label" src="{{ bars_uri }}">
<table class="labels"><tr><th>label</th><th>queries</th><th>expected articleTypes</th>
{% for r in routes %}<th>{{ pk }} {{ r }}</th>{% endfor %}<th>category accuracy</th></tr>
{% for row in label_rows %}<tr><td>{{ row.label }}</td><td>{{ row.queries }}</td><td>{{ row.expected }}</td>
{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}<td>{{ row.accuracy }}</td></tr>
{% endfor %}</table></section>

{% macro grid(rows) %}<table class="grid"><tr><th>photo</th><th>results (green: expected articleType, red: not)</th></tr>
{% for row in rows %}<tr><td><div class="th query" title="{{ row.path }}"><img src="{{ row.uri }}" alt="{{ row.path }}"></div>
<div class="cap">{{ row.label }}<br>{{ row.expected }}</div></td><td>
{% for col in row.columns %}<div class="route" data-route="{{ col.route }}"><b>{{ col.route }}</b>: {{ pk }} {{ "%.2f"|format(col.p) }}
{%- if col.predicted %}, predicted {{ col.predicted }}{% endif %}{% if col.routed %}, searched in {{ col.routed }}{% endif %}
<div class="strip">{% for t in col.results %}<div class="res"><div class="th {{ 'hit' if t.hit else 'miss' }}" title="{{ t.id }}: {{ t.category }} ({{ 'hit' if t.hit else 'miss' }})"><img src="{{ t.uri }}" alt="{{ t.id }}"></div>
<div class="cap">{{ t.category }}<br>{{ "%.1f"|format(t.pct) }}%</div></div>{% endfor %}</div></div>
{% endfor %}</td></tr>
{% endfor %}</table>{% endmacro %}
<section id="random-queries"><h2>Random photos</h2>
<p class="note">{{ random_rows|length }} photos drawn at random (seed {{ seed }}).</p>
{{ grid(random_rows) }}</section>

<section id="worst-labels"><h2>Worst labels</h2>
{% for w in worst %}<h3>{{ w.label }}: {{ pk }} {{ w.value }} over {{ w.queries }} photos</h3>
{{ grid(w.rows) }}{% endfor %}</section>

<section id="skipped"><h2>Skipped</h2>
{% if skipped %}<table class="skipped"><tr><th>line</th><th>path</th><th>reason</th></tr>
{% for s in skipped %}<tr><td>{{ s.row }}</td><td>{{ s.path }}</td><td>{{ s.reason }}</td></tr>
{% endfor %}</table>{% else %}<p class="note">Nothing was skipped.</p>{% endif %}</section>
{% if thumbnail_failures %}<p class="note">{{ thumbnail_failures }} thumbnails could not be read (grey).</p>{% endif %}
</body></html>
"""


def _style() -> Markup:
    """The stylesheet of evaluate/html.py's page plus the photo rows' few rules."""
    t = html.TEMPLATE
    start, end = t.find("<style>"), t.find("</style>")
    base = t[start + len("<style>"):end] if 0 <= start < end else ""
    return Markup(base + EXTRA_STYLE)  # our own constant: escaping would break selectors such as a > b


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _metric_rows(results: dict[str, dict[str, Any]], k: int) -> list[tuple[str, list[str]]]:
    pk = f"P@{k}"
    rows: list[tuple[str, list[str]]] = [
        ("photos", [str(s["queries"]) for s in results.values()]),
        (pk, [_fmt(s[pk]) for s in results.values()]),
        (f"{pk}, mean over labels", [_fmt(s[f"{pk}_label_mean"]) for s in results.values()]),
        ("category accuracy", [_fmt(s["category_accuracy"]) for s in results.values()]),
        ("photos with a predicted category", [str(s["predicted"]) for s in results.values()]),
        ("routed into a category", [_pct(s["routed_share"]) for s in results.values()]),
        (f"photos with fewer than {k} results", [str(s["short_results"]) for s in results.values()]),
    ]
    for key, what in (("latency", "latency"), ("encode_latency", "encode"), ("search_latency", "search")):
        for p in ("p50_ms", "p90_ms", "p99_ms"):
            rows.append((f"{what} {p}", [_fmt(s[key][p], 1) for s in results.values()]))
    return rows


def render_report(data: dict[str, Any], queries: Sequence[PhotoQuery], outcomes: dict[str, list[Outcome]],
                  product_image: Callable[[str], Path | None], seed: int = 0, grid_queries: int = 12,
                  worst_labels: int = 4, per_label: int = 3) -> tuple[str, int]:
    """The page for ``data`` (photos.json's content); ``queries[i]`` was searched as ``outcomes[r][i]``.
    Returns the HTML and how many thumbnails could not be read."""
    k, routes, results = data["k"], data["routes"], data["results"]
    pk = f"P@{k}"
    products = html.Thumbnails(product_image)
    photo_paths = {q.rel: q.path for q in queries}
    photos = html.Thumbnails(photo_paths.get, px=PHOTO_PX)

    def row(i: int) -> dict[str, Any]:
        q = queries[i]
        cols = []
        for r in routes:
            o = outcomes[r][i]
            cols.append({"route": r, "p": o.p_at_k, "routed": ", ".join(o.routed) if o.routed else None,
                         "predicted": f"{o.predicted[0]} ({o.predicted[1]:.0%})" if o.predicted else None,
                         "results": [{"id": pid, "category": cat or "(none)", "pct": pct, "hit": hit,
                                      "uri": products(pid)}
                                     for pid, cat, pct, hit in zip(o.ids, o.categories, o.pct, o.hits)]})
        return {"path": q.rel, "label": q.label, "expected": " | ".join(sorted(q.expected)), "uri": photos(q.rel),
                "columns": cols}

    stats = results[routes[0]]["per_label"]
    labels = sorted(stats, key=lambda lab: (stats[lab][pk], lab))
    rng = np.random.default_rng(seed)
    random_rows = sorted(rng.permutation(len(queries))[:grid_queries].tolist())
    worst = []
    for lab in labels[:worst_labels]:
        mine = [i for i, q in enumerate(queries) if q.label == lab]
        picked = sorted(rng.permutation(mine)[:per_label].tolist()) if mine else []
        worst.append({"label": lab, "value": _fmt(stats[lab][pk], 3), "queries": stats[lab]["queries"],
                      "rows": [row(i) for i in picked]})
    label_rows = []
    for lab in labels:
        expected = sorted({t for q in queries if q.label == lab for t in q.expected})
        acc = label_accuracy(results, lab)
        label_rows.append({"label": lab, "queries": stats[lab]["queries"], "expected": " | ".join(expected),
                           "cells": [_fmt(results[r]["per_label"][lab][pk]) for r in routes], "accuracy": _fmt(acc)})
    context = {
        "title": f"{Path(data['workspace']).name} on {Path(data['dataset']).name}", "dataset": data["dataset"],
        "workspace": data["workspace"], "encoder": data["encoder"],
        "predictor": data.get("category_predictor", "the encoder"), "k": k, "pk": pk, "routes": routes,
        "n_evaluated": data["counts"]["evaluated"], "seed": seed, "style": _style(),
        "n_skipped": data["counts"]["skipped_rows"] + data["counts"]["skipped_photos"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "metric_rows": _metric_rows(results, k),
        "bars_uri": html.png_uri(html.category_bars({r: results[r]["per_label"] for r in routes}, pk, labels)),
        "label_rows": label_rows, "random_rows": [row(i) for i in random_rows], "worst": worst,
        "skipped": data["skipped"]["rows"] + data["skipped"]["photos"],
    }
    context["thumbnail_failures"] = len(products.failed) + len(photos.failed)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(**context), context["thumbnail_failures"]
