"""The index registry; backends are imported on first use."""
from __future__ import annotations

import importlib

from lookalike.index.base import Index
from lookalike.registry import Registry

INDEXES: Registry[Index] = Registry("index")
_PLUGINS = ("lookalike.index.backends", "lookalike.index.faiss_backend", "lookalike.index.hnswlib_backend",
            "lookalike.index.annoy_backend", "lookalike.index.pgvector", "lookalike.index.milvus")
_loaded = False


def _load_plugins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _PLUGINS:
            importlib.import_module(mod)


def create_index(name: str, dim: int, **kwargs: object) -> Index:
    _load_plugins()
    return INDEXES.create(name, dim=dim, **kwargs)


def index_class(name: str) -> type[Index]:
    """The class registered under ``name`` (registered factories are the classes themselves)."""
    _load_plugins()
    family, _ = INDEXES.split(name)
    return INDEXES._factories[family]  # type: ignore[return-value]


def list_indexes() -> dict[str, str]:
    """Every backend, plus ``auto``: a choice among them (index/auto.py), not a backend of its own."""
    _load_plugins()
    return {"auto": "chosen from n, dim and the memory budget (--max-memory), like autofaiss",
            **INDEXES.describe()}


__all__ = ["INDEXES", "Index", "create_index", "index_class", "list_indexes"]
