"""Scalar filters for server-side index backends (pgvector, Milvus), which filter next to the vectors.

The in-process backends filter by an ``allowed`` label set computed by the caller. A server can do better:
it keeps a copy of each row's attributes (``build(..., attributes=[...])``) and evaluates the filter itself, so
the set never crosses the wire and replicas see the same rows. Backends that can, carry the capability
``"attr_filter"`` and take ``search(..., where=ScalarFilter(...))``.

Attribute values are kept and compared as strings, like ``Store.list_products`` and the CLI's
``--filter attr:value``: several values of one attribute are ORed, different attributes are ANDed.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io_utils import atomic_write


@dataclass(frozen=True)
class ScalarFilter:
    equals: Mapping[str, Sequence[str]] = field(default_factory=dict)  # attr -> allowed values
    exclude: Mapping[str, Sequence[str]] = field(default_factory=dict)  # attr -> values that drop the row
    deny: Sequence[int] = ()  # labels never returned (the query product itself, already seen ones ...)

    def __post_init__(self) -> None:
        for part in (self.equals, self.exclude):
            for k, vals in part.items():
                if not isinstance(k, str) or isinstance(vals, str | bytes):
                    raise TypeError(f"filter on {k!r} needs a list of values, got {vals!r}")

    def is_empty(self) -> bool:
        return not (self.equals or self.exclude or len(self.deny))


def as_attribute_rows(attributes: Iterable[Mapping[str, Any] | None] | None, n: int) -> list[dict[str, str]]:
    """One dict of string values per row (``None`` values dropped): the form both servers store."""
    if attributes is None:
        return [{} for _ in range(n)]
    rows = [{str(k): str(v) for k, v in (a or {}).items() if v is not None} for a in attributes]
    if len(rows) != n:
        raise ValueError(f"expected {n} attribute rows, got {len(rows)}")
    return rows


def allowed_labels(allowed: np.ndarray | None) -> np.ndarray | None:
    """The contract's ``allowed`` (boolean mask by label, or label array) as a sorted int64 label array."""
    if allowed is None:
        return None
    a = np.asarray(allowed)
    if a.dtype == bool:
        return np.flatnonzero(a).astype(np.int64)
    return np.unique(a.astype(np.int64, copy=False))


def save_pointer(path: Path, backend: str, dim: int, params: Mapping[str, Any]) -> None:
    """A server backend's rows are durable on the server already: its index file only says where they are."""
    meta = json.dumps({"backend": backend, "dim": dim, "params": dict(params)}, indent=2)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(meta))


def read_pointer(path: Path, backend: str) -> tuple[int, dict[str, Any]]:
    """(dim, params) of a file written by save_pointer, checked to belong to ``backend``."""
    meta = json.loads(Path(path).read_text())
    if meta.get("backend") != backend:
        raise ValueError(f"{path} holds a {meta.get('backend')!r} index, not {backend!r}")
    return int(meta["dim"]), meta["params"]
