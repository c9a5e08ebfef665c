"""Export a trained model folder to ONNX (``model.onnx``), for onnxruntime on CPU.

Input ``images``: float32 (batch, 3, H, W), already normalised with the folder's preprocessing.
Outputs ``embedding`` (batch, dim), L2-normalised, and, for models with a class head, ``logits``
(batch, classes): the scaled cosines whose softmax gives the category probabilities.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lookalike.encoders.onnx_runtime import OPSET, export
from lookalike.io_utils import read_json

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"


class _Outputs(nn.Module):
    """The model with a fixed output tuple (no empty logits tensor for head-less models)."""

    def __init__(self, model: nn.Module, with_logits: bool) -> None:
        super().__init__()
        self.model = model
        self.with_logits = with_logits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        emb, logits = self.model(images)
        return (emb, logits) if self.with_logits else (emb,)


def has_head(spec: dict) -> bool:
    return spec.get("recipe") == "classifier" and int(spec.get("num_classes", 0)) > 0


def export_onnx(model_dir: Path, opset: int = OPSET) -> Path:
    """Write ``model_dir/model.onnx`` from ``model.pt`` and ``training.json``; returns its path."""
    from lookalike.training.models import load_trained

    model_dir = Path(model_dir)
    meta = read_json(model_dir / "training.json")
    spec = meta["model"]
    model = load_trained(model_dir, spec)
    h, w = meta["preprocess"]["size"]
    heads = has_head(spec)
    wrapped = _Outputs(model, heads).eval()
    names = ["embedding", "logits"] if heads else ["embedding"]
    return export(wrapped, torch.zeros(2, 3, h, w), model_dir / ONNX_FILE, names, opset=opset)
