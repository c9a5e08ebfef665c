"""``build()``: ingest -> encode -> index -> similar-all -> store, each stage resumable and timed.

The CLI and the service never reach past this module and ``Recommender``.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lookalike import __version__
from lookalike.catalogue import ColumnMapping, IngestResult, ingest, resolve_image_path
from lookalike.encoders import Encoder, WeightsUnavailableError, create_encoder
from lookalike.engines import check_engine
from lookalike.engines.ray_engine import RayOptions, embed_with_ray
from lookalike.index.build import build_index
from lookalike.recommend.similarity_pct import SimilarityScale
from lookalike.recommend.topk import topk_all
from lookalike.store.sql import SimilarRow, Store
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)

EXACT_SIMILAR_LIMIT = 200_000  # above this, similar lists come from the ANN index instead of blocked GEMM
FLUSH_ROWS = 4096  # vectors are written in chunks of this size, so an interrupted run resumes


@dataclass
class BuildResult:
    workspace: Path
    encoder: str
    encoder_reason: str
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"workspace  {self.workspace}", f"encoder    {self.encoder}  ({self.encoder_reason})",
                 (f"index      {self.index.get('backend')} {self.index.get('params', {})}"
                  f"  recall@10={self.index.get('recall_at_10')}")]
        lines += [f"{k:<10} {v}" for k, v in self.counts.items()]
        bad = {k: v for k, v in self.problems.items() if v}
        lines.append("problems   " + (", ".join(f"{k}={v}" for k, v in bad.items()) or "none")
                     + "  (details: reports/validation.json)")
        lines.append("stage times (s): " + "  ".join(f"{k}={v:.1f}" for k, v in self.stages.items()))
        return "\n".join(lines)


def default_encoder(workspace: Path) -> tuple[str, str]:
    """The best encoder available, and why: a trained model > pretrained Lite0 > color-texture."""
    ws = Workspace(workspace)
    if any((ws.root / "models").glob("*/training.json")):
        return f"trained:{ws.root}", "a model trained in this workspace"
    try:
        from lookalike.encoders.weights import resolve_weights

        src = resolve_weights("tf_efficientnet_lite0", workspace=ws.root).source
        return "timm:tf_efficientnet_lite0", f"pretrained EfficientNet-Lite0 weights found ({src})"
    except (WeightsUnavailableError, ImportError) as e:
        log.info("no pretrained weights: %s", str(e).splitlines()[0])
        return "color-texture", "no trained model and no pretrained weights: weight-free descriptor"


def open_encoder(name: str, workspace: Path) -> Encoder:
    """Create an encoder and restore any catalogue-fitted state saved in the workspace."""
    enc = create_encoder(name)
    if enc.needs_fit:
        enc.load_state(Workspace(workspace).models_dir(name))
    return enc


def _product_images(ws: Workspace, store: Store) -> tuple[list[str], list[str | None], list[Path]]:
    cat = ws.read(ws.catalogue_json)
    root = Path(cat.get("root", ws.root))
    ids, hashes, paths = [], [], []
    for p in store.iter_products():
        if p.image:
            ids.append(p.id)
            hashes.append(p.image_hash)
            paths.append(resolve_image_path(ws.root, root, p.image))
    return ids, hashes, paths


def embed(workspace: Path, encoder: Encoder, encoder_name: str, store: Store, batch_size: int = 64,
          num_workers: int | None = None, show_progress: bool = True, fit_sample: int = 2000,
          engine: str = "local", ray: RayOptions | None = None) -> dict[str, int]:
    """Encode every product whose image is new or changed; vectors land in chunks as they finish.

    ``engine="ray"`` runs the encoding on Ray Data (``ray`` says where and how wide); same chunks, same resume.
    """
    check_engine(engine)
    ws = Workspace(workspace)
    vs = VectorStore(ws.vectors_dir(encoder_name))
    ids, hashes, paths = _product_images(ws, store)
    if encoder.needs_fit:
        state = ws.models_dir(encoder_name)
        try:
            encoder.load_state(state)
        except FileNotFoundError:
            rng = np.random.default_rng(0)
            sample = sorted(rng.choice(len(paths), size=min(fit_sample, len(paths)), replace=False))
            encoder.fit([paths[i] for i in sample], show_progress=show_progress)
            encoder.save_state(state)
    changed = vs.bind(encoder.identity())
    if changed:
        log.warning("%s changed since its vectors were made (%s): every product is encoded again",
                    encoder_name, ", ".join(changed))
    done = vs.done()
    todo = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if pid not in done or done[pid] != h]
    log.info("embedding %d of %d products (%d already done)", len(todo), len(ids), len(ids) - len(todo))
    buf_ids: list[str] = []
    buf_hashes: list[str | None] = []
    buf_vecs: list[np.ndarray] = []
    failed = 0
    todo_paths = [paths[i] for i in todo]
    if engine == "ray":
        res = embed_with_ray(ws.root, encoder_name, [ids[i] for i in todo], [hashes[i] for i in todo], todo_paths,
                             vs, ray, flush_rows=FLUSH_ROWS, show_progress=show_progress)
        return {"embedded": res.embedded, "reused": len(ids) - len(todo), "encode_failed": res.failed}
    for batch in encoder.encode_iter(todo_paths, batch_size=batch_size, show_progress=show_progress,
                                     num_workers=num_workers):
        for pos, why in batch.errors:
            failed += 1
            log.warning("skipped %s: %s", ids[todo[pos]], why)
        buf_ids += [ids[todo[j]] for j in batch.indices]
        buf_hashes += [hashes[todo[j]] for j in batch.indices]
        buf_vecs.append(batch.vectors)
        if len(buf_ids) >= FLUSH_ROWS:
            vs.append(buf_ids, buf_hashes, np.concatenate(buf_vecs))
            buf_ids, buf_hashes, buf_vecs = [], [], []
    if buf_ids:
        vs.append(buf_ids, buf_hashes, np.concatenate(buf_vecs))
    return {"embedded": len(todo) - failed, "reused": len(ids) - len(todo), "encode_failed": failed}


def load_vectors(workspace: Path, encoder_name: str, store: Store) -> tuple[list[str], np.ndarray]:
    """Vectors of the live products only (deleted or vanished products are left out)."""
    live = {p.id for p in store.iter_products()}
    return VectorStore(Workspace(workspace).vectors_dir(encoder_name)).load(keep=live)


def codes(values: list[Any]) -> np.ndarray:
    """Equal values -> equal int codes; None -> -1 (never equal to anything)."""
    table: dict[Any, int] = {}
    return np.asarray([-1 if v is None else table.setdefault(v, len(table)) for v in values], dtype=np.int64)


def similar_rows(ids: list[str], scores: np.ndarray, idx: np.ndarray, scale: SimilarityScale):  # type: ignore[no-untyped-def]
    pct = scale.pct(scores)
    for i, pid in enumerate(ids):
        for r in range(idx.shape[1]):
            j = idx[i, r]
            if j < 0:
                break
            yield SimilarRow(pid, r, ids[j], float(scores[i, r]), float(pct[i, r]))


def similar_all(workspace: Path, encoder_name: str, store: Store, k: int = 20, same_category: bool = False,
                show_progress: bool = True, vectors: tuple[list[str], np.ndarray] | None = None,
                index_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-k similar products of every product, written to the ``similar_products`` table."""
    ws = Workspace(workspace)
    ids, vecs = vectors or load_vectors(ws.root, encoder_name, store)
    products = store.get_products(ids)
    groups = codes([products[i].image_hash for i in ids])
    parts = codes([products[i].category for i in ids]) if same_category else None
    scale_path = ws.index_dir(encoder_name) / "similarity.json"
    scale = SimilarityScale.load(scale_path) if scale_path.exists() else SimilarityScale.fit(vecs)
    t0 = time.perf_counter()
    if len(ids) <= EXACT_SIMILAR_LIMIT:
        scores, idx = topk_all(vecs, k, groups=groups, partitions=parts, show_progress=show_progress)
        method = "exact blocked GEMM"
    else:
        scores, idx = _similar_by_index(ws, encoder_name, vecs, k, groups, parts, show_progress)
        method = f"ANN index ({(index_info or {}).get('backend')})"
    t1 = time.perf_counter()
    n = store.replace_similar(encoder_name, similar_rows(ids, scores, idx, scale))
    t2 = time.perf_counter()
    meta = {"k": k, "same_category": same_category, "method": method, "rows": n, "products": len(ids),
            "compute_s": round(t1 - t0, 2), "store_s": round(t2 - t1, 2)}
    ws.write(ws.index_dir(encoder_name) / "similar.json", meta)
    return meta


def _similar_by_index(ws: Workspace, encoder_name: str, vecs: np.ndarray, k: int, groups: np.ndarray,
                      parts: np.ndarray | None, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from lookalike.index.build import load_index

    index = load_index(ws.index_dir(encoder_name))
    fetch = 4 * k + 8  # room for self, identical images and other categories
    scores = np.full((len(vecs), k), -np.inf, np.float32)
    idx = np.full((len(vecs), k), -1, np.int64)
    for start in tqdm(range(0, len(vecs), 4096), desc="similar (ANN)", disable=not show_progress):
        s, lab = index.search(vecs[start : start + 4096], fetch)
        for r in range(len(lab)):
            i = start + r
            ok = (lab[r] >= 0) & (groups[np.maximum(lab[r], 0)] != groups[i])
            if parts is not None:
                ok &= parts[np.maximum(lab[r], 0)] == parts[i]
            keep = np.flatnonzero(ok)[:k]
            scores[i, : len(keep)], idx[i, : len(keep)] = s[r, keep], lab[r, keep]
    return scores, idx


def filter_attributes(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    """Per id, what server index backends filter on: the product's attributes and its category."""
    rows = store.get_products(ids)
    return [{**rows[i].attributes, "category": rows[i].category} if i in rows else {} for i in ids]


def build(catalogue: Path, workspace: Path, encoder: str | None = None, index: str = "auto",
          limit: int | None = None, k: int = 20, same_category: bool = False,
          mapping: ColumnMapping | str | None = None, strict: bool = False, store_url: str | None = None,
          max_memory: str = "4G", batch_size: int = 64, num_workers: int | None = None,
          show_progress: bool = True, engine: str = "local", ray: RayOptions | None = None) -> BuildResult:
    """Run every stage on a catalogue; re-running resumes (unchanged images are not re-encoded)."""
    ws = Workspace(workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    if isinstance(mapping, str):
        mapping = ColumnMapping.parse(mapping)
    stages: dict[str, float] = {}

    t = time.perf_counter()
    ing: IngestResult = ingest(Path(catalogue), ws.root, mapping=mapping, strict=strict, limit=limit,
                               store_url=store_url, show_progress=show_progress)
    stages["ingest"] = time.perf_counter() - t
    store = Store.for_workspace(ws.root, store_url)

    if encoder is None:
        encoder, reason = default_encoder(ws.root)
    else:
        reason = "chosen with --encoder"
    log.info("encoder: %s (%s)", encoder, reason)
    enc = create_encoder(encoder)

    t = time.perf_counter()
    emb = embed(ws.root, enc, encoder, store, batch_size=batch_size, num_workers=num_workers,
                show_progress=show_progress, engine=engine, ray=ray)
    stages["encode"] = time.perf_counter() - t

    ids, vecs = load_vectors(ws.root, encoder, store)
    if not ids:
        raise ValueError("no product could be encoded: see reports/validation.json")
    t = time.perf_counter()
    idx_dir = ws.index_dir(encoder)
    # pgvector keeps the vectors in the store's own database unless told otherwise
    params = {"url": store.url} if index == "pgvector" and store.engine.dialect.name == "postgresql" else None
    _, infos = build_index(vecs, np.arange(len(ids), dtype=np.int64), name=index, path=idx_dir,
                           max_memory=max_memory, params=params, attributes=filter_attributes(store, ids))
    ws.write(idx_dir / "ids.json", {"ids": ids})
    SimilarityScale.fit(vecs).save(idx_dir / "similarity.json")
    stages["index"] = time.perf_counter() - t

    t = time.perf_counter()
    sim = similar_all(ws.root, encoder, store, k=k, same_category=same_category, show_progress=show_progress,
                      vectors=(ids, vecs), index_info=infos)
    stages["similar"] = time.perf_counter() - t

    result = BuildResult(
        workspace=ws.root, encoder=encoder, encoder_reason=reason, stages={k_: round(v, 2) for k_, v in stages.items()},
        counts={"rows": ing.n_rows, "products": ing.n_ok, "vectors": len(ids), "with_similar": sim["products"],
                **emb},
        index=infos, problems=ing.report.counts(),
    )
    ws.write(ws.build_json, {
        **{k_: v for k_, v in asdict(result).items() if k_ != "workspace"},
        "workspace": str(ws.root), "catalogue": str(Path(catalogue).resolve()), "limit": limit,
        "k": k, "same_category": same_category, "index_name": index, "max_memory": max_memory, "engine": engine,
        "encoder_info": enc.info(), "similar": sim,
        "versions": {"lookalike": __version__, "python": platform.python_version(), "numpy": np.__version__},
        "finished_at": datetime.now(UTC).isoformat(),
    })
    return result


def export_similar(workspace: Path, out: Path, encoder: str | None = None, store_url: str | None = None) -> int:
    """Write the similar lists to ``out`` (.parquet, .json or .jsonl); returns the row count."""
    import pandas as pd

    ws = Workspace(workspace)
    encoder = encoder or ws.read(ws.build_json).get("encoder")
    if not encoder:
        raise ValueError(f"{ws.root} has no build.json: run `lookalike build` first")
    store = Store.for_workspace(ws.root, store_url)
    df = pd.DataFrame([asdict(r) for r in store.iter_similar(encoder)])
    out = Path(out)
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    elif out.suffix == ".jsonl":
        df.to_json(out, orient="records", lines=True)
    elif out.suffix == ".json":
        df.to_json(out, orient="records")
    else:
        raise ValueError(f"unknown export format {out.suffix!r}: use .parquet, .json or .jsonl")
    return len(df)
