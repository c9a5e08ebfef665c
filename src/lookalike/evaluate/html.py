"""The self-contained HTML report: thumbnails and charts embedded as base64 data URIs, one file, no JS.

Catalogue images are downscaled to small JPEGs before embedding, so a report over the full catalogue stays
a few MB; a thumbnail that cannot be read becomes a grey placeholder and is counted, never fatal.
"""
from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from lookalike.imaging import load_image

log = logging.getLogger(__name__)

THUMB_PX = 72  # longest side of an embedded thumbnail
THUMB_QUALITY = 70


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class Thumbnails:
    """product id -> JPEG data URI, each image decoded and downscaled once."""

    def __init__(self, image_path: Callable[[str], Path | None], px: int = THUMB_PX) -> None:
        self.image_path, self.px = image_path, px
        self.cache: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self._placeholder: str | None = None

    def __call__(self, product_id: str) -> str:
        if product_id not in self.cache:
            self.cache[product_id] = self._make(product_id)
        return self.cache[product_id]

    def _make(self, product_id: str) -> str:
        path = self.image_path(product_id)
        try:
            if path is None:
                raise FileNotFoundError("the product has no image")
            img = load_image(path)
        except (OSError, ValueError) as e:
            self.failed[product_id] = str(e)
            log.warning("no thumbnail for %s: %s", product_id, e)
            return self.placeholder()
        img.thumbnail((self.px, self.px), Image.Resampling.LANCZOS)
        return self._jpeg_uri(img)

    def placeholder(self) -> str:
        if self._placeholder is None:
            self._placeholder = self._jpeg_uri(Image.new("RGB", (self.px, self.px), (200, 200, 200)))
        return self._placeholder

    def _jpeg_uri(self, img: Image.Image) -> str:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=THUMB_QUALITY, optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def category_bars(per_category: dict[str, dict[str, dict[str, float]]], metric: str, categories: list[str]) -> bytes:
    """Horizontal bars of ``metric`` per category, one bar colour per workspace; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(per_category)
    n_ws = len(names)
    height = 0.28 * max(1, n_ws) * len(categories) * 0.8
    fig, ax = plt.subplots(figsize=(8, max(2.5, 1.2 + height)), dpi=80)
    y = np.arange(len(categories))
    bar = 0.8 / max(1, n_ws)
    for w, name in enumerate(names):
        vals = [per_category[name].get(c, {}).get(metric, 0.0) for c in categories]
        ax.barh(y + w * bar - 0.4 + bar / 2, vals, height=bar, label=name)
    labels = [f"{c} ({int(per_category[names[0]].get(c, {}).get('queries', 0))})" for c in categories]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(categories) - 0.5, -0.5)  # best at the bottom, no blank margin
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{metric} (queries per category in brackets)")
    ax.grid(axis="x", alpha=0.3)
    if n_ws > 1:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lookalike evaluation: {{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; font-size: 13px; }
th:first-child, td:first-child { text-align: left; }
.grid td { vertical-align: top; text-align: left; }
.strip { display: flex; gap: 3px; flex-wrap: nowrap; }
.th { border: 3px solid #999; line-height: 0; }
.th.hit { border-color: #1a9b3c; } .th.miss { border-color: #d22; } .th.query { border-color: #246; }
.th img { display: block; }
.cap { font-size: 11px; color: #555; max-width: 90px; }
.note { color: #555; font-size: 13px; max-width: 70em; }
</style></head><body>
<h1>Evaluation: {{ title }}</h1>
<p class="note">Same-label retrieval with label <b>{{ label }}</b>: {{ n_queries }} queries sampled at random
(seed {{ seed }}) among the {{ n_eligible }} products whose label is shared by another product
({{ query_source }}); a result is
relevant when it has the query's label; the query itself is excluded (other products with an identical
image are not, although the stored similar lists drop them). Ranking: exact inner-product search over
each workspace's vectors{% if workspaces|length > 1 %}, restricted to the {{ n_shared }} product ids that every
compared workspace has, with the same queries in each{% endif %}. Created {{ created_at }} in {{ runtime_s }} s.</p>

<section id="metrics"><h2>Metrics</h2>
<table class="metrics"><tr><th>metric</th>{% for w in workspaces %}<th>{{ w.name }}<br><small>{{ w.encoder }}</small></th>{% endfor %}</tr>
{% for m in metric_names %}<tr><td>{{ m }}</td>{% for w in workspaces %}<td>{{ "%.4f"|format(w.overall[m]) }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h3 id="ann">ANN index against exact search, and latency</h3>
<table class="ann"><tr><th>figure</th>{% for w in workspaces %}<th>{{ w.name }}</th>{% endfor %}</tr>
<tr><td>index</td>{% for w in workspaces %}<td>{{ w.ann.backend }} {{ w.ann.params or "" }}</td>{% endfor %}</tr>
{% for k in ks %}<tr><td>recall@{{ k }} vs exact</td>{% for w in workspaces %}<td>{{ w.ann.get("recall@%d"|format(k), "n/a") }}</td>{% endfor %}</tr>
{% endfor %}{% for kind in ("index", "exact") %}{% for p in ("p50_ms", "p95_ms", "p99_ms") %}
<tr><td>{{ kind }} search, one query, top-{{ ks|max }}: {{ p }}</td>{% for w in workspaces %}<td>{{ w.latency.get(kind, {}).get(p, "n/a") }}</td>{% endfor %}</tr>
{% endfor %}{% endfor %}</table></section>

<section id="categories"><h2>Per category: {{ bar_metric }}</h2>
<p class="note">Categories with at least {{ min_queries }} queries, worst first. Full per-category figures are in
metrics.json.</p>
<img class="bars" alt="{{ bar_metric }} per category" src="{{ bars_uri }}"></section>

{% macro grid(rows) %}<table class="grid"><tr><th>query</th>{% for w in workspaces %}<th class="ws-col">{{ w.name }} top-{{ grid_k }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td><div class="th query" title="{{ r.query_id }}: {{ r.label }}"><img src="{{ r.query_uri }}" alt="query {{ r.query_id }}"></div>
<div class="cap">{{ r.query_id }}<br>{{ r.label }}</div></td>
{% for col in r.columns %}<td class="ws-col" data-workspace="{{ col.name }}"><div class="strip">
{% for t in col.results %}<div class="th {{ 'hit' if t.hit else 'miss' }}" title="{{ t.id }}: {{ t.label }} ({{ 'hit' if t.hit else 'miss' }})"><img src="{{ t.uri }}" alt="{{ t.id }}"></div>{% endfor %}
</div><div class="cap">{{ col.n_hits }}/{{ col.results|length }} hits</div></td>{% endfor %}</tr>
{% endfor %}</table>{% endmacro %}
<section id="random-queries"><h2>Random queries</h2>
<p class="note">Green border: same {{ label }} as the query (hit); red: another one (miss).</p>
{{ grid(random_rows) }}</section>

<section id="worst-categories"><h2>Worst categories</h2>
{% for c in worst %}<h3>{{ c.name }}: {{ bar_metric }} {{ "%.3f"|format(c.value) }} over {{ c.queries }} queries</h3>
{{ grid(c.rows) }}{% endfor %}</section>
{% if photos %}<section id="photos"><h2>Shopper photos: search by photo</h2>
<p class="note">The photos of <b>{{ photos.dataset }}</b>, each searched in every workspace under each route mode
(<i>auto</i>: within the predicted category when the prediction is confident; <i>none</i>: the whole catalogue).
A result is a hit when its articleType is one of the photo's expected types; latency is decode + encode + search
of one photo. Each photo with its top {{ photos.k }}, hits and misses marked, is on the full page:
{% for w in photos.workspaces %}<a href="{{ w.html }}">{{ w.name }}</a>{{ ", " if not loop.last }}{% endfor %}.</p>
<table class="photo-metrics"><tr><th>figure</th>{% for w in photos.workspaces %}<th>{{ w.name }}<br><small>{{ w.category_predictor }}</small></th>{% endfor %}</tr>
{% for name, cells in photos.rows %}<tr><td>{{ name }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h3>Per label (photos in brackets), worst first: {{ photos.pk }}, route {{ photos.route_names }}</h3>
<table class="photo-labels"><tr><th>label</th>{% for w in photos.workspaces %}<th>{{ w.name }}</th>{% endfor %}</tr>
{% for name, cells in photos.label_rows %}<tr><td>{{ name }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table></section>{% endif %}
{% if thumbnail_failures %}<p class="note">{{ thumbnail_failures }} thumbnails could not be read (grey).</p>{% endif %}
</body></html>
"""


def render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(**context)
