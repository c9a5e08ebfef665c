"""``trained:<workspace-or-model-folder>``: an encoder learned on the catalogue by ``lookalike train``.

The embedding is the layer before the class head, L2-normalised. Preprocessing is data in the model
folder (``training.json`` -> ``preprocess``), never code here. Models with a class head also predict
categories: the softmax of the scaled cosine logits. The rare-class bucket ``"other"`` is never returned
as a category; its probability stays in the total, so a photo that looks like none of the known classes
gets a low confidence for every one of them, and ``route=auto`` falls back to a global search.

``backend="onnx"`` (the default) runs ``model.onnx`` (exported on first use when missing or older than the
weights) through onnxruntime on CPU: about 3x the torch throughput, and 7-16 ms against 44-53 ms for one photo
end to end (benchmarks/bench_encoders.py, 1 thread, busy 2-core machine). ``backend="torch"`` runs the PyTorch
network, also the fallback
when no session can be built. Both give the same numbers (within 1e-4).
"""
from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.encoders import ENCODERS
from lookalike.encoders.base import Encoder, l2_normalise
from lookalike.encoders.prep import ImageLike, PreprocessCfg, normalise_batch, prepare_one, resize_to_array
from lookalike.io_utils import read_json

log = logging.getLogger(__name__)

OTHER = "other"
BACKENDS = ("torch", "onnx")
TTA_MODES = ("none", "mirror")


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_MODES)}")
    return tta


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def merge_views(emb: np.ndarray, flipped_emb: np.ndarray, logits: np.ndarray | None,
                flipped_logits: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror TTA: the mean of the two L2-normalised embeddings, renormalised, and logits whose softmax is
    the mean of the two views' probabilities (a log of the mean, so every caller keeps reading logits)."""
    out = l2_normalise(l2_normalise(emb) + l2_normalise(flipped_emb))
    if logits is None or flipped_logits is None:
        return out, None
    p = (softmax(logits) + softmax(flipped_logits)) / 2
    return out, np.log(np.maximum(p, 1e-30)).astype(np.float32)


def _candidates(workspace: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for tj in sorted((workspace / "models").glob("*/training.json")):
        if (tj.parent / "model.pt").exists():
            try:
                out.append((tj.parent, read_json(tj)))
            except ValueError as e:
                log.warning("skipping %s: unreadable training.json (%s)", tj.parent, e)
    return out


def find_model_dir(path: Path) -> Path:
    """A model folder as given, or the best finished model of a workspace: the highest catalogue P@10 in
    its report, the newest on a tie or when no report has one. Unfinished runs are used only when
    nothing has finished (their last completed epoch)."""
    path = Path(path).expanduser().resolve()
    if (path / "training.json").exists():
        if not (path / "model.pt").exists():
            raise FileNotFoundError(f"{path} has no model.pt yet: no training epoch has finished")
        return path
    found = _candidates(path)
    if not found:
        raise FileNotFoundError(f"no trained model in {path}: expected a model folder (with training.json and "
                                f"model.pt) or a workspace with models/<name>/; run `lookalike train` first")
    done = [(d, m) for d, m in found if m.get("status") == "done"] or found

    def rank(item: tuple[Path, dict[str, Any]]) -> tuple[float, str]:
        p10 = (item[1].get("report") or {}).get("p_at_10")
        return (float(p10) if p10 is not None else -1.0, item[1].get("finished_at") or item[1].get("created_at", ""))

    best = max(done, key=rank)[0]
    if len(found) > 1:
        log.info("trained: using %s (best of %d models in %s)", best.name, len(found), path)
    return best


class TrainedEncoder(Encoder):
    """Loads ``model.pt`` or ``model.onnx`` with the folder's ``training.json``."""

    def __init__(self, path: str | Path, backend: str = "onnx", num_threads: int | None = None,
                 name: str | None = None, tta: str | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model_dir = find_model_dir(Path(path))
        self.meta = read_json(self.model_dir / "training.json")
        pre = dict(self.meta["preprocess"])
        for key in ("size", "mean", "std"):
            pre[key] = tuple(pre[key])
        self.preprocess = PreprocessCfg(**pre)
        spec = self.meta["model"]
        self.dim = int(spec["embed_dim"])
        self.name = name or f"trained:{path}"
        self.backend = backend
        # mirror TTA doubles the forward pass; the model folder says whether its report was measured with it
        self.tta = check_tta(tta or self.meta.get("tta") or "none")
        labels = self.meta.get("labels")
        has_head = spec.get("recipe") == "classifier" and bool(labels)
        self.classes: list[str] = list(labels["classes"]) if has_head else []
        # the route threshold calibrated at training time (training/routing.py), used unless set explicitly
        self.route_threshold: float | None = (self.meta.get("routing") or {}).get("threshold") if has_head else None
        self._session: Any = None
        self._model: Any = None
        if backend == "onnx":
            try:
                self._session = self._onnx_session(num_threads)
            except Exception as e:  # noqa: BLE001 - the torch network gives the same numbers, only slower
                log.warning("no onnxruntime session for %s (%s): running the torch model", self.model_dir, e)
                self.backend = "torch"
        if self.backend == "torch":
            import torch

            from lookalike.training.models import load_trained

            if num_threads:
                torch.set_num_threads(num_threads)
            self._model = load_trained(self.model_dir, spec)

    def _onnx_session(self, num_threads: int | None) -> Any:
        onnx_path = self.model_dir / "model.onnx"
        weights = self.model_dir / "model.pt"
        if not onnx_path.exists() or onnx_path.stat().st_mtime < weights.stat().st_mtime:
            from lookalike.training.export import export_onnx

            export_onnx(self.model_dir)
        from lookalike.encoders.onnx_runtime import session

        return session(onnx_path, num_threads)

    # ---- the forward pass ------------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (B, H, W, 3) -> (embeddings (B, dim) L2-normalised, logits (B, classes) or None)."""
        x = normalise_batch(batch, self.preprocess)
        if self.tta == "mirror":  # both views in one batch: one session run instead of two
            n = len(x)
            emb, logits = self._run(np.concatenate([x, np.ascontiguousarray(x[..., ::-1])]))
            if logits is None:
                return merge_views(emb[:n], emb[n:], None, None)
            return merge_views(emb[:n], emb[n:], logits[:n], logits[n:])
        emb, logits = self._run(x)
        return l2_normalise(emb), logits

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._session is not None:
            outs = self._session.run(None, {"images": x})
            emb, logits = outs[0], (outs[1] if len(outs) > 1 else None)
        else:
            import torch

            with torch.inference_mode():
                e, lg = self._model(torch.from_numpy(x))
            emb, logits = e.numpy(), (lg.numpy() if lg.shape[1] else None)
        return emb, (logits if self.classes else None)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(batch)[0]

    # ---- categories --------------------------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    def top_categories(self, logits: np.ndarray, top: int = 1) -> list[list[tuple[str, float]]]:
        """Per row the ``top`` most probable known categories (never "other") with their probabilities."""
        probs = self.probabilities(logits)
        order = np.argsort(-probs, axis=1)
        out = []
        for row, idx in zip(probs, order):
            picks = [(self.classes[i], float(row[i])) for i in idx if self.classes[i] != OTHER]
            out.append(picks[:top])
        return out

    def _prepare(self, images: Sequence[ImageLike]) -> np.ndarray:
        fn = functools.partial(resize_to_array, cfg=self.preprocess)
        arrays = []
        for pos, img in enumerate(images):
            ok, val = prepare_one(img, fn, self.max_pixels)
            if not ok:
                raise ValueError(f"image #{pos} could not be encoded: {val}")
            arrays.append(val)
        h, w = self.preprocess.size
        return np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)

    def encode_and_predict(self, images: Sequence[ImageLike], top: int = 3, batch_size: int = 64
                           ) -> tuple[np.ndarray, list[list[tuple[str, float]]] | None]:
        """One forward pass for both: (vectors (n, dim), top categories per image or None without a head).
        Raises ValueError on an undecodable image, like ``encode``."""
        vecs, preds = [], []
        for s in range(0, len(images), batch_size):
            emb, logits = self.forward(self._prepare(images[s:s + batch_size]))
            vecs.append(emb)
            if logits is not None:
                preds += self.top_categories(logits, top)
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32)
        return vectors, (preds if self.classes else None)

    def predict_category(self, images: Sequence[ImageLike], top: int = 1) -> list[list[tuple[str, float]]] | None:
        if not self.classes:
            return None
        return self.encode_and_predict(images, top)[1]

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256((self.model_dir / "model.pt").read_bytes()).hexdigest()
        return {**super().identity(), "weights_sha256": digest, "tta": self.tta}

    def info(self) -> dict[str, Any]:
        rep = self.meta.get("report") or {}
        return {**super().info(), "model_dir": str(self.model_dir), "backend": self.backend, "tta": self.tta,
                "recipe": self.meta.get("recipe"), "label": self.meta.get("label"), "classes": len(self.classes),
                "fingerprint": self.meta.get("fingerprint"), "finished_at": self.meta.get("finished_at"),
                "quality": {k: rep.get(k) for k in ("val_top1", "val_top1_top20", "p_at_10") if k in rep}}


@ENCODERS.register("trained", takes_arg=True,
                   help="a model trained on the catalogue: trained:<workspace or models/<name> folder>")
def trained_encoder(path: str, backend: str = "onnx", num_threads: int | None = None,
                    tta: str | None = None) -> TrainedEncoder:
    return TrainedEncoder(path, backend=backend, num_threads=num_threads, tta=tta)
