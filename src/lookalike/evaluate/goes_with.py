"""The IKEA goes-with benchmark (Pair's protocol): for each of 76 chairs, rank all 117 dining tables.

A hit at n: a table from a room the chair appears in is in the top n. References computed in the same
run: random (the exact expectation, not a draw) and the HSV colour histogram (the ``colour`` recipe).

Honesty rule: recipes that learn from co-occurrence (``learned``) never see a test room. The chairs are
split into group-disjoint folds over rooms (``group_folds``: chairs sharing a room stay in one fold);
for each fold the recipe is trained on item_room.csv minus *every* room any test chair appears in, then
it ranks that fold's chairs. Weights are chosen up front (``l2``/``min_pairs`` defaults), not tuned on
this benchmark.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io_utils import write_json
from lookalike.recommend.cooccurrence import CoOccurrence, group_folds
from lookalike.recommend.goes_with import create_recipe
from lookalike.recommend.goes_with_features import ItemFeatures, describe_items

log = logging.getLogger(__name__)

NS = (5, 10, 20)
SOURCE, TARGET = "chair", "dining table"
REFERENCES = {"random (measured on this set)": [0.08, 0.15, 0.28],
              "HSV colour histogram (measured on this set)": [0.24, 0.38, 0.54],
              "Pair, VGG16 Gram (published)": [0.35, 0.50, 0.60]}
TARGET_HR = [0.40, 0.55, 0.70]
HONESTY = ("group-disjoint {k}-fold cross-validation over rooms: chairs that share a room are in the same "
           "fold, and for each fold the learned recipe is trained on item_room.csv without any link from a "
           "room that a test chair appears in; no test room is ever used in training")


@dataclass
class IkeaGoesWith:
    root: Path
    chairs: list[str]  # image paths relative to root, the 76 benchmark chairs
    tables: list[str]  # every dining table image
    gold: dict[str, set[str]]  # chair -> tables from its rooms
    links: CoOccurrence  # item_room.csv keyed by image path
    names: dict[str, str]
    colours: dict[str, str]
    types: dict[str, str]  # article number -> IKEA product type ("Coffee table"), from the manifest's label

    @classmethod
    def load(cls, datasets: Path) -> IkeaGoesWith:
        root = Path(datasets) / "ikea"
        pairs_csv = root / "chair_table_pairs.csv"
        if not pairs_csv.is_file():
            raise FileNotFoundError(f"{pairs_csv} not found: pass --datasets pointing at the shared datasets")
        gold: dict[str, set[str]] = defaultdict(set)
        with pairs_csv.open(newline="") as f:
            for r in csv.DictReader(f):
                gold[r["chair_path"]].add(r["table_path"])
        tables = sorted(f"images/{TARGET}/{p.name}" for p in (root / "images" / TARGET).glob("*.jpg"))
        names, colours, types = {}, {}, {}
        with (root / "manifest.csv").open(newline="") as f:
            for r in csv.DictReader(f):
                g = r["group"]
                names[g], colours[g], types[g] = r.get("name", ""), r.get("color", ""), r.get("label", "")
        links = CoOccurrence.from_csv(root / "item_room.csv", item="item_path", group="room_path")
        return cls(root, sorted(gold), tables, dict(gold), links, names, colours, types)

    def features(self, pretrained: bool, text: bool = True, gram: bool = True) -> ItemFeatures:
        paths = self.chairs + self.tables
        cats: list[str | None] = [SOURCE] * len(self.chairs) + [TARGET] * len(self.tables)
        # the article number is the file stem: it keys the manifest's name (product line) and colour
        stems = [Path(p).stem for p in paths]
        texts = {"title": [self.names.get(s, "") for s in stems], "color": [self.colours.get(s, "") for s in stems]}
        feats, failed = describe_items(paths, cats, [self.root / p for p in paths], texts if text else None,
                                       pretrained=pretrained, gram=gram,
                                       types=[self.types.get(s) or None for s in stems])
        if failed:
            log.warning("%d benchmark images could not be read: %s", len(failed), failed[:5])
        return feats


def hit_ratios(ranked: list[list[str]], gold: list[set[str]], ns: tuple[int, ...] = NS) -> list[float]:
    return [float(np.mean([bool(set(r[:n]) & g) for r, g in zip(ranked, gold)])) for n in ns]


def random_hit_ratios(n_candidates: int, gold: list[set[str]], ns: tuple[int, ...] = NS) -> list[float]:
    """Exact expected HR of a uniformly random ranking: 1 - C(N - m, n) / C(N, n) per query."""
    return [float(np.mean([1 - math.comb(n_candidates - len(g), n) / math.comb(n_candidates, n) for g in gold]))
            for n in ns]


def without_text(feats: ItemFeatures) -> ItemFeatures:
    return ItemFeatures(feats.ids, feats.categories, feats.visual, {}, feats.info)


def feature_sets(feats: ItemFeatures) -> list[tuple[str, ItemFeatures]]:
    """What each run may read: pixels only; + title and colour words; + product types (type affinity)."""
    return [("visual", without_text(feats)), ("visual+text", feats.without_types()), ("visual+text+type", feats)]


def cross_validate(bench: IkeaGoesWith, feats: ItemFeatures, recipe: str, folds: list[tuple[list[str], set[str]]],
                   **params: Any) -> list[float]:
    """HR@n of ``recipe``, each fold's chairs ranked by a recipe fitted without that fold's rooms."""
    tgt = feats.rows_of(TARGET)
    ranked, gold = [], []
    for test, held in folds:
        rec = create_recipe(recipe, **params)
        if rec.needs_links or feats.types is not None:  # the type affinity is learned from the links too
            train = bench.links.without_groups(held)
            assert not (train.groups & held), "a held-out room leaked into training"
            rec.fit(feats, train)
        src = np.asarray([feats.pos[c] for c in test if c in feats.pos], np.int64)
        scores = rec.score(feats, src, tgt)
        for i, row in zip(src, scores):
            order = np.argsort(-row, kind="stable")
            ranked.append([feats.ids[int(tgt[j])] for j in order])
            gold.append(bench.gold[feats.ids[int(i)]])
    return hit_ratios(ranked, gold)


def run_benchmark(datasets: Path, recipes: tuple[str, ...] = ("style", "colour", "combined", "learned"),
                  weights: tuple[str, ...] = ("package", "none"), n_folds: int = 5, seed: int = 0,
                  out: Path | None = None, gram: bool = True) -> dict[str, Any]:
    """Every recipe x weights setting x feature set (visual only, visual + text); returns (and writes) the JSON.

    ``gram=False`` leaves the CNN out (colour + text channels only, one run labelled "no-cnn"): a quick check.
    """
    t0 = time.perf_counter()
    bench = IkeaGoesWith.load(datasets)
    folds = group_folds(bench.chairs, bench.links, n_folds, seed)
    gold = [bench.gold[c] for c in bench.chairs]
    result: dict[str, Any] = {
        "protocol": f"{len(bench.chairs)} chairs, each ranks all {len(bench.tables)} dining tables; hit@n when a "
                    "table from a room the chair appears in is in the top n",
        "evaluation": HONESTY.format(k=len(folds)),
        "folds": [{"test_chairs": len(t), "held_out_rooms": len(h),
                   "train_links": len(bench.links.without_groups(h).links)} for t, h in folds],
        "ns": list(NS), "target": TARGET_HR, "references_given": REFERENCES,
        "random_expected": random_hit_ratios(len(bench.tables), gold), "runs": {},
    }
    for w in (weights if gram else ("no-cnn",)):
        t = time.perf_counter()
        feats = bench.features(pretrained=(w == "package"), gram=gram)
        run: dict[str, Any] = {"gram_weights": feats.info.get("gram_weights"), "failed_images": feats.info["failed"],
                               "feature_s": round(time.perf_counter() - t, 1)}
        for fs_name, fs in feature_sets(feats):
            for r in recipes:
                if fs_name != "visual" and r in ("style", "colour"):
                    continue  # they read no text or type channel: the same figures as the visual run
                if r == "style" and not gram:
                    continue  # no Gram blocks to read
                hr = cross_validate(bench, fs, r, folds)
                run[f"{r} [{fs_name}]"] = [round(x, 3) for x in hr]
                log.info("%s weights, %s [%s]: HR@5/10/20 = %s", w, r, fs_name, run[f"{r} [{fs_name}]"])
        result["runs"][w] = run
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        write_json(Path(out), result)
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [result["protocol"], "evaluation: " + result["evaluation"], "",
             f"{'run':<44} {'HR@5':>6} {'HR@10':>6} {'HR@20':>6}"]
    lines.append(f"{'random (exact expectation, this run)':<44} " + " ".join(f"{x:>6.3f}" for x in result["random_expected"]))
    for w, run in result["runs"].items():
        for name, hr in run.items():
            if isinstance(hr, list):
                lines.append(f"{(w + ' weights: ' + name):<44} " + " ".join(f"{x:>6.3f}" for x in hr))
    for name, hr in result["references_given"].items():
        lines.append(f"{'ref: ' + name:<44} " + " ".join(f"{x:>6.2f}" for x in hr))
    lines.append(f"{'target':<44} " + " ".join(f"{x:>6.2f}" for x in result["target"]))
    lines.append(f"({result['seconds']} s)")
    return "\n".join(lines)
