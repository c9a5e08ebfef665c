"""The encoder registry. Plugin modules are imported on first use, so that importing this package
(which worker processes do) stays light and never loads torch."""
from __future__ import annotations

import importlib

from lookalike.encoders.base import EncodedBatch, Encoder, WeightsUnavailableError, l2_normalise
from lookalike.encoders.prep import PreprocessCfg
from lookalike.registry import Registry

ENCODERS: Registry[Encoder] = Registry("encoder")

_PLUGINS = ("lookalike.encoders.descriptors", "lookalike.encoders.timm_clip", "lookalike.encoders.gram",
            "lookalike.encoders.trained")
_loaded = False


def _load_plugins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _PLUGINS:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:  # a plugin that exists but misses a dependency is a real error
                    raise


def create_encoder(name: str, **kwargs: object) -> Encoder:
    """``create_encoder("color-texture")``, ``create_encoder("timm:resnet18", pretrained=False)``..."""
    _load_plugins()
    return ENCODERS.create(name, **kwargs)


def list_encoders() -> dict[str, str]:
    _load_plugins()
    return ENCODERS.describe()


__all__ = [
    "ENCODERS",
    "EncodedBatch",
    "Encoder",
    "PreprocessCfg",
    "WeightsUnavailableError",
    "create_encoder",
    "l2_normalise",
    "list_encoders",
]
