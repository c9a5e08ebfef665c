"""Recipes that learn an encoder from the catalogue itself (classifier, autoencoder, contrastive), the
quality report, and the ONNX export; the result loads as the ``trained:<workspace-or-model-folder>`` encoder."""
from __future__ import annotations

from lookalike.training.data import OTHER, LabelMap, split_validation
from lookalike.training.export import export_onnx
from lookalike.training.trainer import TrainConfig, TrainResult, train

__all__ = ["OTHER", "LabelMap", "TrainConfig", "TrainResult", "export_onnx", "split_validation", "train"]
