"""ONNX export and onnxruntime sessions for CPU inference of torch encoders.

onnxruntime runs these small CNNs about 3x faster than eager torch on this CPU, and one photo in a fraction
of the time (benchmarks/bench_encoders.py), which is what keeps photo search inside its latency budget.
Exports are cached by content: the file name carries a digest of the weights and the input size, so a
changed checkpoint never reuses a stale graph, and an unchanged one is exported once per cache folder.
"""
from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lookalike.io_utils import atomic_write

log = logging.getLogger(__name__)

OPSET = 17


def export(module: nn.Module, dummy: torch.Tensor, path: Path, output_names: Sequence[str],
           input_name: str = "images", opset: int = OPSET) -> Path:
    """Write ``module`` (eval mode, batch axis dynamic) to ``path`` atomically; returns ``path``."""
    module = module.eval()
    names = list(output_names)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (dummy,), str(tmp), input_names=[input_name], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in [input_name, *names]}, opset_version=opset,
                              dynamo=False)

    atomic_write(Path(path), write)
    log.info("exported %s", path)
    return Path(path)


def session(path: Path, num_threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = num_threads
    # idle pool threads would spin for a while after each run, and a second session (photo search runs the
    # encoder and the category router one after the other) then waits for cores they hold: +45 ms a photo
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def weights_digest(module: nn.Module) -> str:
    """sha1 over every parameter and buffer, in state-dict order (a few tens of ms for EfficientNet-Lite0)."""
    h = hashlib.sha1()
    for key, t in module.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class PooledFeatures(nn.Module):
    """A timm model's pooled pre-logits features: what the ``timm:`` encoder embeds with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


def cached_session(module: nn.Module, stem: str, size: tuple[int, int], folder: Path,
                   num_threads: int | None = None) -> tuple[Any, Path]:
    """An onnxruntime session over ``module`` (one input ``images``, one output), exported into ``folder`` on
    first use as ``<stem>-<h>x<w>-<weights digest>.onnx``."""
    h, w = size
    safe = stem.replace("/", "_").replace(":", "_")
    path = Path(folder) / f"{safe}-{h}x{w}-{weights_digest(module)}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        export(module, torch.zeros(2, 3, h, w), path, ["features"])
    return session(path, num_threads), path


def cached_timm_session(model: nn.Module, model_name: str, size: tuple[int, int], folder: Path,
                        num_threads: int | None = None) -> tuple[Any, Path]:
    """An onnxruntime session over a timm ``model``'s pooled features."""
    return cached_session(PooledFeatures(model), model_name, size, folder, num_threads)
