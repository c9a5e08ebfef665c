"""The journal: entries commit or roll back with their transaction; flushing copies vectors once; pruning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.store import journal
from lookalike.store.sql import Store
from lookalike.store.vectors import VectorStore


def test_entries_follow_their_transaction_and_flush_once(tmp_path: Path) -> None:
    store = Store.for_workspace(tmp_path)
    v = np.arange(4, dtype=np.float32)
    with pytest.raises(RuntimeError), store.session() as s, s.begin():
        journal.record(s, "enc", "add", "lost", "h0", v)
        raise RuntimeError("the change failed before commit")
    with store.session() as s, s.begin():
        journal.record(s, "enc", "add", "a", "h1", v)
        journal.record(s, "enc", "add", "a", "h2", v + 1)  # re-embedded: the newest wins
        journal.record(s, "enc", "remove", "b")
    got = journal.entries(store, "enc")
    assert [(e.op, e.product_id) for e in got] == [("add", "a"), ("add", "a"), ("remove", "b")]
    assert journal.flush_vectors(tmp_path, store, "enc") == 1
    assert journal.flush_vectors(tmp_path, store, "enc") == 0
    ids, vecs = VectorStore.for_encoder(tmp_path, "enc").load()
    assert ids == ["a"] and (vecs[0] == v + 1).all()
    assert VectorStore.for_encoder(tmp_path, "enc").done() == {"a": "h2"}
    assert journal.prune(store, "enc", upto=got[1].seq) == 2
    assert journal.last_seq(store, "enc") == got[2].seq
    with pytest.raises(ValueError, match="op"), store.session() as s:
        journal.record(s, "enc", "move", "a")
