"""Offline replay: synthetic shoppers who prefer a hidden attribute value click on similar-product carousels.

Two arms see the same sessions (same source pages, same random draws per slot): ``visual`` always shows the
pure visual order (``rerank="none"``), ``rerank`` shows the click-re-ranked order (recommend/rerank.py) and
learns from its own impressions and clicks as the replay goes. Printed per window of sessions: click-through
rate (clicks / impressions) and the share of shown slots holding a preferred product, for both arms.

The shopper model (the examination hypothesis): slot p is looked at with probability ``(1 + p) ** -true_eta``;
a looked-at product is clicked with probability ``p_pref`` if it has the hidden value, else ``p_other``.
Nothing in the recommender knows the attribute; it only sees impressions and clicks.

    .venv/bin/python benchmarks/replay_feedback.py --workspace /work/ws/live/replay-ws \
        --catalogue ../shared/datasets/fashion-product-images-small --limit 3000 --attr season --value Summer

Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.recommend.rerank import ClickStats, RerankParams
from lookalike.recommender import Recommender

log = logging.getLogger("replay")


@dataclass
class Window:
    impressions: int = 0
    clicks: int = 0
    preferred_shown: int = 0
    preferred_top3: int = 0
    sessions: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ctr(self) -> float:
        return self.clicks / max(1, self.impressions)

    @property
    def share(self) -> float:
        return self.preferred_shown / max(1, self.impressions)


def ensure_workspace(ws: Path, catalogue: Path | None, limit: int | None) -> None:
    if (ws / "build.json").exists():
        return
    if catalogue is None:
        raise SystemExit(f"{ws} is not built: give --catalogue to build it")
    from lookalike.pipeline import build

    log.info("building %s from %s (limit %s)", ws, catalogue, limit)
    build(catalogue, ws, encoder="color-texture", limit=limit, k=20, show_progress=False)


def run_arm(rec: Recommender, arm: str, sources: list[str], preferred: set[str], args: argparse.Namespace
            ) -> list[Window]:
    params = RerankParams(weight=args.weight, prior_strength=args.prior_strength, prior_ctr=args.prior_ctr,
                          exploration=args.exploration, position_eta=args.eta)
    rec.feedback = ClickStats(params)
    rng = np.random.default_rng(args.seed)  # the same stream in both arms: common random numbers
    exam = (1.0 + np.arange(args.k)) ** -args.true_eta
    windows = [Window() for _ in range(args.windows)]
    per = args.sessions // args.windows
    for n in range(per * args.windows):
        w = windows[n // per]
        src = sources[int(rng.integers(len(sources)))]
        draws = rng.random(args.k)
        items = rec.similar(src, k=args.k, rerank="none" if arm == "visual" else "ctr")
        w.sessions += 1
        for p, it in enumerate(items):
            pid = it.product.id
            pref = pid in preferred
            clicked = draws[p] < exam[p] * (args.p_pref if pref else args.p_other)
            w.impressions += 1
            w.clicks += int(clicked)
            w.preferred_shown += int(pref)
            w.preferred_top3 += int(pref and p < 3)
            rec.feedback.add("impression", pid, src, p)
            if clicked:
                rec.feedback.add("click", pid, src, p)
    return windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--catalogue", type=Path, help="build the workspace from this catalogue if it is not built")
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--attr", default="season", help="the hidden attribute shoppers prefer a value of")
    ap.add_argument("--value", default="Summer")
    ap.add_argument("--sessions", type=int, default=30000)
    ap.add_argument("--windows", type=int, default=6)
    ap.add_argument("--sources", type=int, default=300, help="product pages the sessions start from")
    ap.add_argument("-k", type=int, default=10, help="carousel length")
    ap.add_argument("--p-pref", type=float, default=0.30)
    ap.add_argument("--p-other", type=float, default=0.06)
    ap.add_argument("--true-eta", type=float, default=1.0, help="shoppers' real examination decay")
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--prior-strength", type=float, default=20.0)
    ap.add_argument("--prior-ctr", type=float, default=0.05)
    ap.add_argument("--exploration", type=float, default=1.0)
    ap.add_argument("--eta", type=float, default=1.0, help="the estimator's examination decay")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    ensure_workspace(args.workspace, args.catalogue, args.limit)
    rec = Recommender.open(args.workspace, load_encoder=False)
    preferred = {pid for pid, p in rec.products.items() if str(p.attributes.get(args.attr)) == args.value}
    rng = np.random.default_rng(args.seed + 1)
    eligible = [pid for pid in rec.pos if pid not in preferred]  # pages whose own product is neutral
    sources = [eligible[i] for i in rng.choice(len(eligible), size=min(args.sources, len(eligible)), replace=False)]
    cand = [rec.similar(s, k=rec.pre_idx.shape[1], rerank="none") for s in sources]
    pool_share = np.mean([np.mean([it.product.id in preferred for it in c]) for c in cand])
    print(f"workspace {args.workspace}: {len(rec.pos)} products, {len(preferred)} with {args.attr}={args.value} "
          f"({len(preferred) / len(rec.pos):.1%}); {len(sources)} source pages; share of preferred products in "
          f"their {rec.pre_idx.shape[1]}-candidate visual lists {pool_share:.1%}")
    t0 = time.perf_counter()
    arms = {arm: run_arm(rec, arm, sources, preferred, args) for arm in ("visual", "rerank")}
    secs = time.perf_counter() - t0
    per = args.sessions // args.windows
    print(f"\nshopper model: examine slot p with (1+p)^-{args.true_eta:g}; click {args.p_pref:g} if "
          f"{args.attr}={args.value} else {args.p_other:g}. rerank: w={args.weight:g} m={args.prior_strength:g} "
          f"c={args.exploration:g} eta={args.eta:g}. {args.sessions} sessions per arm, k={args.k}")
    print(f"{'sessions':>14} | {'CTR visual':>10} {'CTR rerank':>10} {'lift':>7} | "
          f"{'pref visual':>11} {'pref rerank':>11} | {'top3 visual':>11} {'top3 rerank':>11}")
    for i, (v, r) in enumerate(zip(arms["visual"], arms["rerank"])):
        print(f"{i * per:>6}-{(i + 1) * per:<7} | {v.ctr:>10.4f} {r.ctr:>10.4f} {r.ctr / max(v.ctr, 1e-9) - 1:>+7.1%} | "
              f"{v.share:>11.1%} {r.share:>11.1%} | {v.preferred_top3 / (3 * v.sessions):>11.1%} "
              f"{r.preferred_top3 / (3 * r.sessions):>11.1%}")
    tot = {a: (sum(w.clicks for w in ws), sum(w.impressions for w in ws)) for a, ws in arms.items()}
    cv, cr = tot["visual"][0] / tot["visual"][1], tot["rerank"][0] / tot["rerank"][1]
    print(f"{'all':>14} | {cv:>10.4f} {cr:>10.4f} {cr / cv - 1:>+7.1%} |  ({secs:.1f}s for both arms)")


if __name__ == "__main__":
    main()
