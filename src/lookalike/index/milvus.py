"""Milvus: ``milvus://path.db`` (milvus-lite, in-process) or ``http(s)://host:19530`` (a cluster), one code path.

Both speak the Milvus API through ``pymilvus.MilvusClient``: milvus-lite serves it from a thread of this
process, a cluster over the network. One collection per index: ``label`` (INT64 primary key), ``vector``
(FLOAT_VECTOR, HNSW, inner product) and ``attrs`` (JSON). Scalar filters become Milvus boolean expressions, with
literal lists (milvus-lite does not take ``filter_params`` templates), so a very long allow list makes a long
expression: ask for an attribute filter instead where one says the same.
Collections are created with Strong consistency: a search sees every insert and delete acknowledged before it.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.backends import _check_k, _empty, as_labels, as_unit_rows, check_new_labels, topk_rows
from lookalike.index.base import Index, Timer, pad_results
from lookalike.index.scalar import ScalarFilter, allowed_labels, as_attribute_rows, read_pointer, save_pointer

log = logging.getLogger(__name__)

INSERT_CHUNK = 2000  # rows per insert call: well under the gRPC message limit at dim 2048
MAX_TOPK = 16384  # Milvus's limit on k (and on offset + k)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_clients: dict[str, Any] = {}  # one client per address: milvus-lite serves one database file per process


def client_uri(uri: str) -> str:
    """``milvus://path.db`` -> an absolute milvus-lite path; http(s) URLs are passed through."""
    if uri.startswith("milvus://"):
        path = uri[len("milvus://"):]
        if not path.endswith(".db"):
            raise ValueError(f"a milvus-lite address names a .db file: milvus://path.db, got {uri!r}")
        return str(Path(path).expanduser().resolve())
    if uri.startswith(("http://", "https://")):
        return uri
    raise ValueError(f"milvus address must be milvus://path.db or http(s)://host:19530, got {uri!r}")


def _client(uri: str) -> Any:
    if uri not in _clients:
        from pymilvus import MilvusClient

        token = os.environ.get("LOOKALIKE_MILVUS_TOKEN", "")  # a cluster's "user:password" or API key
        _clients[uri] = MilvusClient(uri=uri, token=token) if uri.startswith("http") else MilvusClient(uri)
    return _clients[uri]


def _ints(values: Any) -> str:
    return json.dumps(np.asarray(values, np.int64).tolist())


def _any_of(key: str, values: Any) -> str:
    """``attrs["k"] == "a" or attrs["k"] == "b"``: milvus-lite takes ``in`` only on plain fields, not JSON paths.
    JSON string literals are valid Milvus string literals, escapes included."""
    return " or ".join(f"attrs[{json.dumps(key)}] == {json.dumps(str(v))}" for v in values) or "false"


def filter_expr(allowed: np.ndarray | None, where: ScalarFilter | None) -> str:
    """A Milvus boolean expression, or "" for no filter."""
    parts: list[str] = []
    lab = allowed_labels(allowed)
    if lab is not None:
        parts.append(f"label in {_ints(lab)}")
    if where is not None:
        for key, vals in where.equals.items():
            parts.append(_any_of(key, vals))
        for key, vals in where.exclude.items():
            if vals:  # a row without the attribute is kept, as the other backends do
                parts.append(f"not ({_any_of(key, vals)})")
        if len(where.deny):
            parts.append(f"not (label in {_ints(where.deny)})")
    return " and ".join(f"({p})" for p in parts)


@INDEXES.register("milvus", help="Milvus HNSW: uri=milvus://path.db (milvus-lite, in-process) or "
                                 "http(s)://host:19530; add, remove, filter and attribute filters as expressions")
class MilvusIndex(Index):
    name = "milvus"
    ext = "milvus"
    capabilities = frozenset({"add", "remove", "filter", "attr_filter"})
    EXACT_FILTER_MAX = 4096  # a filter passing this few rows is scored exactly when the graph search runs short

    def __init__(self, dim: int, uri: str = "milvus://milvus.db", collection: str = "lookalike_vectors",
                 M: int = 16, efConstruction: int = 200, ef: int = 128) -> None:
        if not _NAME.match(collection):
            raise ValueError(f"collection name {collection!r}: letters, digits and _ only")
        super().__init__(dim, uri=uri, collection=collection, M=M, efConstruction=efConstruction, ef=ef)
        self.uri, self.collection = client_uri(uri), collection

    @property
    def client(self) -> Any:
        return _client(self.uri)

    # -- writes --
    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None,
              attributes: Iterable[Mapping[str, Any] | None] | None = None) -> None:
        from pymilvus import DataType

        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        c, p = self.client, self.params
        self.timings["train"] = 0.0
        with Timer(self.timings, "add"):
            if c.has_collection(self.collection):
                c.drop_collection(self.collection)
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("label", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("attrs", DataType.JSON)
            index = c.prepare_index_params()
            index.add_index("vector", index_type="HNSW", metric_type="IP",
                            params={"M": int(p["M"]), "efConstruction": int(p["efConstruction"])})
            c.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")
            self._insert(x, lab, as_attribute_rows(attributes, len(x)))
            c.flush(self.collection)  # seal the segments, so the HNSW graphs are built now, not mid-benchmark
        log.info("milvus: %d rows in %s/%s in %.1fs", len(x), self.uri, self.collection, self.timings["add"])

    def _insert(self, x: np.ndarray, lab: np.ndarray, attrs: list[dict[str, str]]) -> None:
        for a in range(0, len(x), INSERT_CHUNK):
            rows = [{"label": int(label), "vector": v, "attrs": at}
                    for label, v, at in zip(lab[a : a + INSERT_CHUNK], x[a : a + INSERT_CHUNK],
                                            attrs[a : a + INSERT_CHUNK])]
            self.client.insert(self.collection, rows)

    def _present(self, labels: np.ndarray) -> np.ndarray:
        got = self.client.get(self.collection, ids=labels.tolist(), output_fields=["label"])
        return np.asarray([r["label"] for r in got], np.int64)

    def add(self, vectors: np.ndarray, labels: np.ndarray,
            attributes: Iterable[Mapping[str, Any] | None] | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._present(lab))
        self._insert(x, lab, as_attribute_rows(attributes, len(x)))

    def remove(self, labels: np.ndarray) -> None:
        lab = np.asarray(labels, np.int64)
        if len(lab):
            self.client.delete(self.collection, ids=lab.tolist())

    def set_attributes(self, labels: np.ndarray, attributes: Iterable[Mapping[str, Any] | None]) -> None:
        """Replace the attribute copy of indexed rows (an upsert rewrites the row: its vector is read back)."""
        lab = np.asarray(labels, np.int64)
        rows = self.client.get(self.collection, ids=lab.tolist(), output_fields=["label", "vector"])
        vec = {int(r["label"]): r["vector"] for r in rows}
        new = as_attribute_rows(attributes, len(lab))
        up = [{"label": int(v), "vector": vec[int(v)], "attrs": a} for v, a in zip(lab, new) if int(v) in vec]
        if up:
            self.client.upsert(self.collection, up)

    # -- search --
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               where: ScalarFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} results per query, asked for {k}")
        q = as_unit_rows(queries, self.dim)
        if len(q) == 0:
            return _empty(0, k)
        expr = filter_expr(allowed, where)
        hits = self.client.search(
            self.collection, data=list(q), limit=k, anns_field="vector", filter=expr,
            search_params={"metric_type": "IP", "params": {"ef": max(int(self.params["ef"]), k)}},
            output_fields=[])
        scores = [np.asarray([h["distance"] for h in row], np.float32) for row in hits]
        labels = [np.asarray([h["label"] for h in row], np.int64) for row in hits]
        if expr and min(len(lab) for lab in labels) < k:
            self._fill_short(q, k, expr, scores, labels)
        return pad_results(scores, labels, k)

    def _fill_short(self, q: np.ndarray, k: int, expr: str, scores: list[np.ndarray],
                    labels: list[np.ndarray]) -> None:
        """Redo the queries a filtered graph search left short of k (milvus-lite walks HNSW with the filter
        as a bitmap and stops at ef candidates, so a tight filter comes back short); when few rows pass,
        score them all exactly, like the in-process backends do."""
        passing = int(self.client.query(self.collection, filter=expr, output_fields=["count(*)"])[0]["count(*)"])
        short = [i for i, lab in enumerate(labels) if len(lab) < min(k, passing)]
        if not short:
            return
        if passing <= self.EXACT_FILTER_MAX:
            rows = self.client.query(self.collection, filter=expr, output_fields=["label", "vector"],
                                     limit=passing)
            lab = np.asarray([r["label"] for r in rows], np.int64)
            vec = np.asarray([r["vector"] for r in rows], np.float32)
            s, j = topk_rows(q[short] @ vec.T, min(k, len(lab)))
            for n, i in enumerate(short):
                scores[i], labels[i] = s[n], lab[j[n]]
            return
        ef = min(MAX_TOPK, max(int(self.params["ef"]), k) * 16)
        hits = self.client.search(self.collection, data=list(q[short]), limit=k, anns_field="vector", filter=expr,
                                  search_params={"metric_type": "IP", "params": {"ef": ef}}, output_fields=[])
        for i, row in zip(short, hits):
            scores[i] = np.asarray([h["distance"] for h in row], np.float32)
            labels[i] = np.asarray([h["label"] for h in row], np.int64)

    # -- bookkeeping --
    def __len__(self) -> int:
        got = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(got[0]["count(*)"])

    def nbytes(self) -> int:
        # the server's own memory is not visible through the API: vectors + HNSW links + label, as laid out
        return len(self) * (4 * self.dim + 8 * int(self.params["M"]) + 8)

    def save(self, path: Path) -> None:
        save_pointer(path, self.name, self.dim, self.params)

    @classmethod
    def load(cls, path: Path) -> MilvusIndex:
        dim, params = read_pointer(path, cls.name)
        index = cls(dim, **params)
        if not index.client.has_collection(index.collection):
            raise FileNotFoundError(f"collection {index.collection} is not in {index.uri}: rebuild the index")
        index.client.load_collection(index.collection)
        return index
