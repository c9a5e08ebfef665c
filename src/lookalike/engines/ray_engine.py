"""Batch embedding on Ray Data: ``map_batches`` over the same Encoder, one actor per worker.

The driver (``pipeline.embed``) decides what to embed, fits catalogue-dependent encoder state and saves it in
the workspace; each actor then builds the encoder once from its registry name and that workspace, and decodes
and encodes its batches with ``Encoder.encode_iter`` in-process. Results stream back to the driver, which
writes them as ``VectorStore`` chunks as they arrive, so an interrupted Ray run resumes like a local one.

On a remote cluster (``--ray-address ray://…`` or ``auto``) every node needs lookalike installed (the image
in deploy/) and must see the image paths and the workspace at the same paths (a shared volume).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.encoders import Encoder, create_encoder
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how to spread the work.

    ``address``: None reuses a Ray already initialised in this process or starts a local one with
    ``local_cpus`` CPUs; ``"auto"`` joins the cluster this machine belongs to; ``"ray://host:10001"`` goes
    through Ray Client. ``concurrency``: number of encoder actors (default: one per cluster CPU).
    """

    address: str | None = None
    batch_size: int = 64
    concurrency: int | None = None
    cpus_per_actor: float = 1.0
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("ray batch size must be >= 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("ray concurrency must be >= 1")


@dataclass
class RayEmbedResult:
    embedded: int
    failed: int
    actors: int
    seconds: float


def load_encoder(name: str, workspace: Path) -> Encoder:
    """The encoder as the driver left it: created by name, catalogue-fitted state restored from the workspace."""
    enc = create_encoder(name)
    if enc.needs_fit:
        enc.load_state(Workspace(workspace).models_dir(name))
    return enc


class EncodeActor:
    """A Ray Data callable class: constructed once per actor, so the model loads once per worker."""

    def __init__(self, encoder_name: str, workspace: str) -> None:
        self.encoder = load_encoder(encoder_name, Path(workspace))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        n = len(paths)
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        errors = [""] * n
        # num_workers=0: the actor is already the unit of parallelism; a process pool inside it would
        # oversubscribe the CPUs Ray reserved for it
        for b in self.encoder.encode_iter(paths, batch_size=max(1, n), show_progress=False, num_workers=0):
            vectors[b.indices] = b.vectors
            ok[b.indices] = True
            for pos, why in b.errors:
                errors[pos] = why
        return {"pos": batch["pos"], "ok": ok, "error": np.asarray(errors, dtype=object), "vector": vectors}


def _connect(options: RayOptions) -> bool:
    """Initialise Ray unless the caller already did; True when this call started (so must stop) it."""
    import ray

    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
    else:
        ray.init(num_cpus=options.local_cpus, include_dashboard=False, log_to_driver=False)
    return True


def _actor_count(options: RayOptions) -> int:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    fit = max(1, int(cpus // options.cpus_per_actor))
    if options.concurrency:
        if options.concurrency > fit:
            # an autoscaling cluster may grow into it; a fixed one runs only `fit` actors and queues the rest
            log.warning("ray: %d actors asked, the cluster has CPUs for %d now", options.concurrency, fit)
        return options.concurrency
    return fit


def embed_with_ray(workspace: Path, encoder_name: str, ids: Sequence[str], hashes: Sequence[str | None],
                   paths: Sequence[Path], vectors: VectorStore, options: RayOptions | None = None,
                   flush_rows: int = 4096, show_progress: bool = True) -> RayEmbedResult:
    """Encode ``paths`` on Ray and append the vectors of ``ids`` to ``vectors`` in chunks of ``flush_rows``.

    Bad images are skipped, logged and counted, as in the local engine.
    """
    options = options or RayOptions()
    if not (len(ids) == len(hashes) == len(paths)):
        raise ValueError("ids, hashes and paths must have the same length")
    if not ids:
        return RayEmbedResult(0, 0, 0, 0.0)
    import ray
    import ray.data

    t0 = time.perf_counter()
    started = _connect(options)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = show_progress
        actors = _actor_count(options)
        # about one block per batch keeps every actor fed without making tiny tasks
        blocks = max(1, min(math.ceil(len(paths) / options.batch_size), 10_000))
        ds = ray.data.from_items([{"pos": i, "path": str(p)} for i, p in enumerate(paths)],
                                 override_num_blocks=blocks)
        out = ds.map_batches(
            EncodeActor, fn_constructor_kwargs={"encoder_name": encoder_name, "workspace": str(workspace)},
            batch_size=options.batch_size, batch_format="numpy", num_cpus=options.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=actors), udf_modifying_row_count=False,
        )
        log.info("ray: embedding %d images on %d actors (batch %d)", len(paths), actors, options.batch_size)
        embedded, failed = _drain(out.iter_batches(batch_size=flush_rows, batch_format="numpy"),
                                  ids, hashes, vectors)
    finally:
        if started:
            ray.shutdown()
    return RayEmbedResult(embedded, failed, actors, round(time.perf_counter() - t0, 2))


def _drain(batches: Any, ids: Sequence[str], hashes: Sequence[str | None], vectors: VectorStore) -> tuple[int, int]:
    """Write each result batch as one VectorStore chunk; returns (embedded, failed)."""
    embedded = failed = 0
    for batch in batches:
        pos = np.asarray(batch["pos"], dtype=np.int64)
        ok = np.asarray(batch["ok"], dtype=bool)
        for p, why in zip(pos[~ok], np.asarray(batch["error"])[~ok]):
            log.warning("skipped %s: %s", ids[p], why)
        failed += int((~ok).sum())
        good = pos[ok]
        if len(good):
            vecs = np.asarray(batch["vector"], dtype=np.float32)[ok]
            vectors.append([ids[p] for p in good], [hashes[p] for p in good], vecs)
            embedded += len(good)
    return embedded, failed
