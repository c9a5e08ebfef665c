"""Pretrained neural encoders: any timm image model (``timm:<model>``) and OpenCLIP (``clip:<model>[/<tag>]``).

The forward pass runs in the calling process; worker processes only decode and resize (the base's default
``worker_fn``), so the models are never pickled.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.encoders import ENCODERS
from lookalike.encoders.base import Encoder, WeightsUnavailableError, l2_normalise
from lookalike.encoders.onnx_runtime import cached_timm_session
from lookalike.encoders.prep import ImageLike, PreprocessCfg, normalise_batch, prepare_one
from lookalike.encoders.weights import (
    WEIGHT_EXTS,
    build_timm_model,
    hub_offline,
    hub_online,
    resolve_cache_dir,
)

log = logging.getLogger(__name__)


def _resize_mode(crop_pct: float, resize: str | None) -> str:
    return resize or ("crop" if crop_pct < 1.0 else "pad")


def timm_preprocess(model: torch.nn.Module, image_size: int | None = None, resize: str | None = None
                    ) -> PreprocessCfg:
    """timm's eval data config as a PreprocessCfg; ``image_size`` overrides the input size."""
    import timm.data

    dc = timm.data.resolve_model_data_config(model)
    size = (image_size, image_size) if image_size else tuple(dc["input_size"][1:])
    crop_pct = float(dc.get("crop_pct") or 1.0)
    return PreprocessCfg(size=size, mean=tuple(dc["mean"]), std=tuple(dc["std"]),
                         interpolation=str(dc.get("interpolation", "bicubic")),
                         resize=_resize_mode(crop_pct, resize), crop_pct=crop_pct)  # type: ignore[arg-type]


def _prepare(images: Sequence[ImageLike], enc: Encoder) -> np.ndarray:
    fn = enc.worker_fn()
    arrays = []
    for i, item in enumerate(images):
        ok, val = prepare_one(item, fn, enc.max_pixels)
        if not ok:
            raise ValueError(f"image #{i} could not be decoded: {val}")
        arrays.append(val)
    return np.stack(arrays)


BACKENDS = ("auto", "onnx", "torch")


class TimmEncoder(Encoder):
    """Pooled pre-logits features of a timm model (what ``num_classes=0`` returns).

    ``backend``: ``onnx`` runs the features through onnxruntime (exported once into ``<cache>/onnx``, outputs
    within 1e-4 of torch), ``torch`` runs eager torch, ``auto`` picks onnx for pretrained weights and torch for
    random ones (tests and experiments, where an export per model would cost more than it saves).
    """

    def __init__(self, model_name: str, pretrained: bool = True, checkpoint: str | Path | None = None,
                 cache_dir: Path | None = None, workspace: Path | None = None, image_size: int | None = None,
                 device: str = "cpu", resize: str | None = None, backend: str = "auto",
                 num_threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        # keep the head: predict_imagenet needs it, and forward_head(pre_logits=True) equals num_classes=0
        model, self.weights_source, report = build_timm_model(model_name, pretrained, checkpoint, cache_dir,
                                                              workspace)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.model_name = model_name
        self.has_trained_head = bool(report and report.head_loaded and getattr(model, "num_classes", 0))
        self.name = f"timm:{model_name}"
        self.preprocess = timm_preprocess(model, image_size, resize)
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if backend == "auto":
            backend = "onnx" if self.weights_source and device == "cpu" else "torch"
        self.backend, self.onnx_path = backend, None
        self._session: Any = None
        if backend == "onnx":
            try:
                self._session, self.onnx_path = cached_timm_session(
                    self.model, model_name, self.preprocess.size, resolve_cache_dir(cache_dir) / "onnx", num_threads)
            except Exception as e:  # noqa: BLE001 - torch gives the same numbers, only slower
                log.warning("no onnxruntime session for %s (%s): running torch", self.name, e)
                self.backend = "torch"

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalise_batch(batch, self.preprocess)).to(self.device)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {"images": normalise_batch(batch, self.preprocess)})[0]
        with torch.inference_mode():
            x = self.model.forward_features(self._tensor(batch))
            return self.model.forward_head(x, pre_logits=True).float().cpu().numpy()

    def class_logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits of the model's own classifier, (B, num_classes), for stacked ``worker_fn`` outputs.
        A linear head runs in numpy on the pre-logits, so the onnx session serves this too."""
        head = self.model.get_classifier()
        if isinstance(head, torch.nn.Linear):
            w, b = head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy()
            return np.asarray(self._embed(batch), np.float32) @ w.T + b
        with torch.inference_mode():
            return self.model(self._tensor(batch)).float().cpu().numpy()

    def predict_imagenet(self, images: Sequence[ImageLike], top: int = 5, batch_size: int = 32
                         ) -> list[list[tuple[int, float]]]:
        """ImageNet (class index, probability) pairs per image, best first; needs pretrained head weights."""
        if not self.has_trained_head:
            raise RuntimeError(f"{self.name} has no pretrained classifier head (weights: {self.weights_source})")
        out: list[list[tuple[int, float]]] = []
        for start in range(0, len(images), batch_size):
            probs = torch.from_numpy(self.class_logits(_prepare(images[start:start + batch_size], self))).softmax(-1)
            p, idx = probs.topk(min(top, probs.shape[1]), dim=1)
            out += [list(zip(i.tolist(), map(float, q.tolist()))) for i, q in zip(idx, p)]
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "model": self.model_name, "weights": self.weights_source or "random",
                "imagenet_head": self.has_trained_head, "backend": self.backend}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "weights": self.weights_source or "random"}


# ---- OpenCLIP ----------------------------------------------------------------------------------------------
def _clip_preprocess(model: torch.nn.Module, resize: str | None) -> PreprocessCfg:
    import open_clip

    pc = open_clip.get_model_preprocess_cfg(model)
    size = pc.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    # open_clip's 'shortest' = resize the short side then centre-crop, i.e. our crop with crop_pct 1
    mode = {"shortest": "crop", "squash": "squash", "longest": "pad"}.get(pc.get("resize_mode", "shortest"), "crop")
    return PreprocessCfg(size=size, mean=tuple(pc["mean"]), std=tuple(pc["std"]),
                         interpolation=str(pc.get("interpolation", "bicubic")), resize=resize or mode,  # type: ignore[arg-type]
                         crop_pct=1.0)


def _create_clip(arch: str, tag: str | None, pretrained: bool, checkpoint: str | Path | None,
                 cache_dir: Path | None, workspace: Path | None) -> tuple[torch.nn.Module, str | None]:
    """Build an OpenCLIP model: random, or weights from checkpoint -> files -> open_clip's own loading."""
    import open_clip

    if not pretrained and checkpoint is None:
        return open_clip.create_model(arch, pretrained=None, pretrained_text=False), None
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag is None and tags:
        tag = "laion2b_s34b_b79k" if "laion2b_s34b_b79k" in tags else tags[0]
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    kw: dict[str, Any] = {"force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)), "pretrained_text": False}
    if tag_cfg:  # a local file of a known tag still wants that tag's normalisation
        kw["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                      if k in tag_cfg}
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"checkpoint {path} does not exist")
        return open_clip.create_model(arch, pretrained=str(path), **kw), "checkpoint"

    cache = resolve_cache_dir(cache_dir) / "open_clip"
    folders = ([Path(workspace) / "models" / "weights" / "open_clip"] if workspace is not None else []) + [cache]
    stems = [f"{arch}-{tag}", arch] if tag else [arch]
    tried = []
    for folder in folders:
        for stem in stems:
            for ext in WEIGHT_EXTS:
                if (folder / f"{stem}.{ext}").is_file():
                    return open_clip.create_model(arch, pretrained=str(folder / f"{stem}.{ext}"), **kw), "cache"
        tried.append(f"{folder}/{{{','.join(stems)}}}.{{{','.join(WEIGHT_EXTS)}}}: not found")

    if tag is None:
        tried.append(f"open_clip: no pretrained tag known for {arch!r}")
    else:
        online = hub_online()
        # offline: open_clip's Hugging Face cache under our cache folder, then the default one
        for cdir in ([str(cache)] if online else [str(cache), None]):
            try:
                with hub_offline(not online):
                    model = open_clip.create_model(arch, pretrained=tag, cache_dir=cdir, **kw)
                return model, "hub" if online else "cache"
            except Exception as e:  # noqa: BLE001 - reported in the final message
                where = cdir or "the default Hugging Face cache"
                why = str(e).splitlines()[0][:200] if online else "hub unreachable and not in this cache"
                tried.append(f"open_clip tag {tag!r} via {where}: {why}")
    raise WeightsUnavailableError(
        f"No pretrained OpenCLIP weights for {arch}{'/' + tag if tag else ''} are available offline. Tried:\n"
        + "\n".join(f"  - {t}" for t in tried)
        + "\nTo fix, do one of:\n  1. pass checkpoint=/path/to/open_clip_model.safetensors (or .bin/.pt/.pth);\n"
        f"  2. put the file at {cache}/{stems[0]}.safetensors (cache folder: env var LOOKALIKE_CACHE_DIR); "
        f"on a machine with internet get it with: python -c \"import open_clip; open_clip.create_model("
        f"'{arch}', pretrained='{tag}', cache_dir='open_clip')\" and copy the downloaded open_clip_model.safetensors "
        f"(or open_clip_pytorch_model.bin) there, or copy that whole cache folder to {cache};\n"
        "  or use pretrained=False for random weights.")


class ClipEncoder(Encoder):
    """OpenCLIP image tower for ``encode``; ``encode_text`` maps text into the same space."""

    def __init__(self, spec: str, pretrained: bool = True, checkpoint: str | Path | None = None,
                 cache_dir: Path | None = None, workspace: Path | None = None, device: str = "cpu",
                 resize: str | None = None) -> None:
        import open_clip

        arch, _, tag = spec.partition("/")
        self.arch, self.tag = arch, (tag or None)
        if arch not in open_clip.list_models():
            raise ValueError(f"unknown OpenCLIP model {arch!r}; known: {', '.join(open_clip.list_models()[:20])}...")
        model, self.weights_source = _create_clip(arch, self.tag, pretrained, checkpoint, cache_dir, workspace)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = f"clip:{spec}"
        self.preprocess = _clip_preprocess(model, resize)
        self.dim = int(open_clip.get_model_config(arch)["embed_dim"])
        self._tokenizer: Any = None

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalise_batch(batch, self.preprocess)).to(self.device)
        with torch.inference_mode():
            return self.model.encode_image(x).float().cpu().numpy()

    def encode_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """float32 (n, dim), rows L2-normalised, comparable with ``encode`` by dot product."""
        import open_clip

        if self._tokenizer is None:
            with hub_offline(not hub_online()):
                self._tokenizer = open_clip.get_tokenizer(self.arch)
        out = [np.empty((0, self.dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            tokens = self._tokenizer(list(texts[start:start + batch_size])).to(self.device)
            with torch.inference_mode():
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "model": self.arch, "tag": self.tag, "weights": self.weights_source or "random"}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "tag": self.tag, "weights": self.weights_source or "random"}


@ENCODERS.register("timm", takes_arg=True, help="pooled features of any timm model, e.g. timm:tf_efficientnet_lite0")
def _timm(model_name: str, **kwargs: Any) -> TimmEncoder:
    return TimmEncoder(model_name, **kwargs)


@ENCODERS.register("clip", takes_arg=True, help="OpenCLIP image tower, e.g. clip:ViT-B-32/laion2b_s34b_b79k")
def _clip(spec: str, **kwargs: Any) -> ClipEncoder:
    return ClipEncoder(spec, **kwargs)


__all__ = ["ClipEncoder", "TimmEncoder", "timm_preprocess"]
