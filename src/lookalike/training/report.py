"""The quality report written after training (``report.json``) and the training curves (``curves.png``).

Measured with the exported network in float32, exactly as the ``trained:`` encoder will run it:
- top-1 accuracy on the validation products, overall and on the 20 most frequent classes;
- P@10: for each validation product, the share of its 10 nearest products in the *whole* catalogue (itself
  excluded) that carry the same raw label (rare labels are not merged into "other" here);
- the most confused pairs of classes.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.encoders.prep import PreprocessCfg
from lookalike.encoders.trained import merge_views
from lookalike.io_utils import atomic_write
from lookalike.training.augment import normalise, to_float

log = logging.getLogger(__name__)

TOP_CLASSES = 20


@torch.no_grad()
def embed_all(model: nn.Module, pixels: np.ndarray, pre: PreprocessCfg, batch: int = 256,
              features: np.ndarray | None = None, above: Callable[[torch.Tensor], torch.Tensor] | None = None,
              tta: str = "none", mirror_view: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, d) L2-normalised, logits (n, C)) in float32. With ``features`` (the cached output of
    a frozen backbone, or of its early blocks) only ``above`` (default: the neck) and the head run.

    ``tta="mirror"`` merges each photo with its mirror image as the ``trained:`` encoder does; with cached
    features, the mirror images are their view ``mirror_view``."""
    if tta == "mirror" and features is not None and mirror_view is None:
        raise ValueError("mirror TTA on cached features needs their mirror view")
    model.eval()

    def run(s: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        if features is not None:
            e = (above or model.neck)(torch.from_numpy(np.asarray(features[s:s + batch, mirror_view if flip else 0]))
                                      .float())
            lg = model.head(e) if model.head is not None else e.new_zeros((len(e), 0))
        else:
            x = normalise(to_float(torch.from_numpy(np.asarray(pixels[s:s + batch]))), pre)
            e, lg = model(x.flip(-1) if flip else x)
        return F.normalize(e, dim=1).float().numpy(), lg.float().numpy()

    embs, logits = [], []
    for s in range(0, len(features) if features is not None else len(pixels), batch):
        e, lg = run(s, False)
        if tta == "mirror":
            fe, flg = run(s, True)
            head = lg.shape[1] > 0
            e, merged = merge_views(e, fe, lg if head else None, flg if head else None)
            lg = merged if merged is not None else lg
        embs.append(e)
        logits.append(lg)
    return np.concatenate(embs), np.concatenate(logits)


def precision_at_10(emb: np.ndarray, labels: list[str | None], queries: np.ndarray, k: int = 10,
                    chunk: int = 512) -> np.ndarray:
    """Per query (indices into ``emb``): share of its k nearest other rows with the same label."""
    codes = {lab: i for i, lab in enumerate(sorted({x for x in labels if x is not None}))}
    lab = np.asarray([codes.get(x, -1) if x is not None else -1 for x in labels])
    cat = torch.from_numpy(emb)
    out = np.zeros(len(queries), np.float32)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk]
        sims = cat[q] @ cat.t()
        sims[torch.arange(len(q)), torch.from_numpy(q)] = -2.0  # a product is not its own neighbour
        top = sims.topk(k, dim=1).indices.numpy()
        out[s:s + chunk] = (lab[top] == lab[q, None]).mean(axis=1)
    return out


def quality_report(emb: np.ndarray, logits: np.ndarray, raw_labels: list[str | None], targets: np.ndarray | None,
                   classes: list[str] | None, val_mask: np.ndarray, k: int = 10) -> dict[str, Any]:
    """The figures above, from the embeddings and logits of every product (in the same order as the labels)."""
    t0 = time.perf_counter()
    rep: dict[str, Any] = {"n_products": len(emb), "n_val": int(val_mask.sum())}
    labelled = np.asarray([x is not None for x in raw_labels])
    counts = Counter(x for x in raw_labels if x is not None)
    top_names = [c for c, _ in counts.most_common() if c != "other"][:TOP_CLASSES]
    queries = np.flatnonzero(val_mask & labelled)
    if len(queries) and len(counts) > 1:
        p = precision_at_10(emb, raw_labels, queries, k)
        rep["p_at_10"] = float(p.mean())
        by_class: dict[str, list[float]] = {}
        for qi, v in zip(queries, p):
            by_class.setdefault(raw_labels[qi], []).append(float(v))
        in_top = [v for qi, v in zip(queries, p) if raw_labels[qi] in top_names]
        rep["p_at_10_top20"] = float(np.mean(in_top)) if in_top else None
        per = {c: (float(np.mean(v)), len(v)) for c, v in by_class.items()}
        rep["p_at_10_worst_classes"] = [{"label": c, "p_at_10": round(m, 4), "n": n}
                                        for c, (m, n) in sorted(per.items(), key=lambda x: x[1][0])[:10] if n >= 5]
    if targets is not None and classes is not None and logits.shape[1]:
        val = np.flatnonzero(val_mask & (targets >= 0))
        pred = logits[val].argmax(1)
        truth = targets[val]
        rep["val_top1"] = float((pred == truth).mean()) if len(val) else None
        top_ids = [classes.index(c) for c in top_names if c in classes]
        sel = np.isin(truth, top_ids)
        rep["val_top1_top20"] = float((pred[sel] == truth[sel]).mean()) if sel.any() else None
        rep["top20_classes"] = top_names
        per_class = {classes[c]: float((pred[truth == c] == c).mean()) for c in top_ids if (truth == c).any()}
        rep["val_top1_by_class_top20"] = dict(sorted(per_class.items(), key=lambda x: x[1]))
        pairs = Counter((int(t), int(p)) for t, p in zip(truth, pred) if t != p)
        n_true = Counter(int(t) for t in truth)
        rep["confusions"] = [{"true": classes[t], "predicted": classes[p], "count": n,
                              "share_of_true": round(n / n_true[t], 4)} for (t, p), n in pairs.most_common(10)]
    rep["report_seconds"] = round(time.perf_counter() - t0, 2)
    return rep


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss (train and validation) and the validation metrics per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [h["loss"] for h in history], label="train loss")
    if all("val_loss" in h for h in history):
        a1.plot(ep, [h["val_loss"] for h in history], label="val loss")
    a1.set_xlabel("epoch")
    a1.legend()
    for key in ("val_acc", "val_p10"):
        vals = [h.get(key) for h in history]
        if any(v is not None for v in vals):
            a2.plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=key)
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1)
    if a2.get_lines():
        a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)
