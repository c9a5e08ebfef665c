"""The Encoder contract shared by every encoder, like sentence-transformers' ``encode()``.

Decoding and resizing (or a whole weight-free descriptor) run in worker processes through
``worker_fn``; the model's forward pass (``_embed``) runs in the calling process on stacked batches.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lookalike.encoders.prep import ImageLike, PreprocessCfg, prepare_one, resize_to_array

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found offline; the message says what was tried and how to fix it."""


@dataclass
class EncodedBatch:
    indices: np.ndarray  # positions in the input sequence that were encoded
    vectors: np.ndarray  # float32 (len(indices), dim), L2-normalised
    errors: list[tuple[int, str]] = field(default_factory=list)  # (position, reason) of skipped images


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def start_method() -> str:
    """How to start decode workers. ``fork`` gives the first batch in 0.4 s instead of 2 s (a spawned
    interpreter re-imports numpy, scipy and scikit-image), and is safe here because workers only decode, resize
    and compute descriptors: they never call torch, onnxruntime or faiss, whose thread pools a fork does not
    carry over. What a fork cannot survive is a lock held by another thread at that instant, so with any
    other thread alive (a server, a background sync) it is ``spawn``. tqdm's monitor only sleeps on an event."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.name != "tqdm_monitor"]
    return "fork" if "fork" in get_all_start_methods() and not others else "spawn"


class Encoder:
    """Base class: subclasses set ``name``, ``dim``, ``preprocess`` and implement ``_embed``."""

    name: str = "encoder"
    dim: int = 0
    preprocess: PreprocessCfg = PreprocessCfg()
    max_pixels: int = DEFAULT_MAX_PIXELS
    # capability: True when ``worker_fn`` does the encoder's work (a descriptor); False when the workers only
    # prepare pixels for a model whose forward pass runs in this process
    works_in_workers: bool = False

    # ---- what subclasses provide ------------------------------------------------------------------
    def worker_fn(self) -> Callable[[Any], np.ndarray]:
        """A picklable function PIL image -> array, run in worker processes."""
        return functools.partial(resize_to_array, cfg=self.preprocess)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        """Stacked ``worker_fn`` outputs -> (B, dim) features (normalised by the caller)."""
        raise NotImplementedError

    def predict_category(self, images: Sequence[ImageLike], top: int = 1) -> list[list[tuple[str, float]]] | None:
        """Top categories with probabilities per image, or None when this encoder cannot predict."""
        return None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.to_dict()}

    def identity(self) -> dict[str, Any]:
        """What decides the vectors this encoder makes. Stored vectors made under another identity are stale
        (a model retrained in place keeps its name), so a build re-encodes them; subclasses add their weights."""
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.to_dict()}

    # ---- encoders fitted on the catalogue (e.g. gram's PCA) ------------------------------------------
    needs_fit: bool = False

    def fit(self, images: Sequence[ImageLike], show_progress: bool = True) -> None:
        """Fit catalogue-dependent state (only when ``needs_fit``)."""

    def save_state(self, folder: Path) -> None:
        """Persist what ``fit`` learned, so ``load_state`` restores the same encoder."""

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote; raise FileNotFoundError when there is nothing."""

    # ---- the shared contract ------------------------------------------------------------------------
    def default_workers(self) -> int:
        """Worker processes for ``encode``: every core (up to 4) for a descriptor. A model's forward pass
        already keeps every core busy through torch's threads, and decoding costs a tenth of it, so it gets
        half the cores: with Lite0 on 2 cores, one worker reached 0.91-0.99 of the bare forward pass, two 0.87-0.93."""
        cores = os.cpu_count() or 1
        return max(1, min(4, cores if self.works_in_workers else cores // 2))

    def encode(self, images: Sequence[ImageLike], batch_size: int = 64, show_progress: bool = True,
               num_workers: int | None = None) -> np.ndarray:
        """Encode images -> float32 (n, dim), rows L2-normalised. Raises ValueError on an undecodable image."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for b in self.encode_iter(images, batch_size, show_progress, num_workers):
            if b.errors:
                pos, why = b.errors[0]
                raise ValueError(f"image #{pos} could not be encoded: {why}")
            out[b.indices] = b.vectors
        return out

    def encode_iter(self, images: Sequence[ImageLike], batch_size: int = 64, show_progress: bool = True,
                    num_workers: int | None = None) -> Iterator[EncodedBatch]:
        """Yield encoded batches in input order; bad images are skipped and listed in ``errors``."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(images)
        workers = self.default_workers() if num_workers is None else num_workers
        in_memory = any(not isinstance(x, (str, os.PathLike)) for x in images[:1])
        fn = self.worker_fn()
        job = functools.partial(prepare_one, fn=fn, max_pixels=self.max_pixels)
        bar = tqdm(total=n, desc=f"encode {self.name}", unit="img", disable=not show_progress)
        try:
            if workers <= 0 or n < 2 * batch_size or in_memory:
                yield from self._batches(map(job, images), n, batch_size, bar)
            else:
                with ProcessPoolExecutor(workers, mp_context=get_context(start_method())) as pool:
                    yield from self._batches(pool.map(job, images, chunksize=max(1, batch_size // 4)), n, batch_size, bar)
        finally:
            bar.close()

    def _batches(self, prepared: Iterator[tuple[bool, Any]], n: int, batch_size: int, bar: tqdm) -> Iterator[EncodedBatch]:
        idx: list[int] = []
        arrays: list[np.ndarray] = []
        errors: list[tuple[int, str]] = []
        for pos, (ok, val) in enumerate(prepared):
            if ok:
                idx.append(pos)
                arrays.append(val)
            else:
                errors.append((pos, val))
            if len(idx) >= batch_size or pos == n - 1:
                vecs = l2_normalise(self._embed(np.stack(arrays))) if arrays else np.empty((0, self.dim), np.float32)
                bar.update(len(idx) + len(errors))
                yield EncodedBatch(np.asarray(idx, dtype=np.int64), vecs, errors)
                idx, arrays, errors = [], [], []
