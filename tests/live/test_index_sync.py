"""The index catches up with the journal: add/remove where the backend can, else a rebuild swapped in; a
crash mid-rebuild leaves the old index and the rebuild runs again at the next start."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lookalike.imaging import content_hash
from lookalike.index.build import build_index, load_index
from lookalike.live.index_sync import IndexSync, index_behind
from lookalike.live.updater import Updater
from lookalike.recommender import Recommender
from lookalike.store import journal
from lookalike.store.sql import ProductRow
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace


def change_catalogue(ws: Path, img: object) -> tuple[Recommender, str, str]:
    """Add one product and delete another through the live path; returns (rec, added id, deleted id)."""
    rec = Recommender.open(ws)
    up = Updater(rec, index_sync=False)
    vec = up.embed([img])[0]  # type: ignore[list-item]
    up.add(ProductRow("fresh", "Fresh", "circle", None, content_hash(img.tobytes()), {}), vec)  # type: ignore[attr-defined]
    gone = rec.similar("p0003", k=1, rerank="none")[0].product.id
    up.delete(gone)
    return rec, "fresh", gone


def nearest_id(ws: Path, vector: np.ndarray) -> str:
    idx_dir = Workspace(ws).index_dir("color-texture")
    index = load_index(idx_dir)
    _, labels = index.search(vector[None, :], 1)
    return Workspace(ws).read(idx_dir / "ids.json")["ids"][int(labels[0, 0])]


def test_incremental_sync_uses_add_and_remove(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    rec, added, gone = change_catalogue(fresh_ws, new_image())
    assert index_behind(fresh_ws, rec.store, "color-texture")
    sync = IndexSync(fresh_ws, rec.store, "color-texture", start_thread=False)
    assert "add" in load_index(sync.dir).capabilities
    out = sync.checkpoint()
    assert out["method"] == "incremental" and out["entries"] == 2
    assert len(load_index(sync.dir)) == rec.n_live
    ids = Workspace(fresh_ws).read(sync.dir / "ids.json")["ids"]
    assert gone not in ids and ids[-1] == added
    assert nearest_id(fresh_ws, rec.vectors[rec.pos[added]]) == added
    stored_ids, _ = VectorStore.for_encoder(fresh_ws, "color-texture").load()
    assert added in stored_ids
    assert journal.entries(rec.store, "color-texture") == [] and not sync.behind()


def test_crash_during_rebuild_keeps_old_index_and_reruns(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    ws = Workspace(fresh_ws)
    idx_dir = ws.index_dir("color-texture")
    ids, vecs = VectorStore.for_encoder(fresh_ws, "color-texture").load()
    build_index(vecs, np.arange(len(ids)), name="annoy", path=idx_dir, params={"n_trees": 8})
    ws.write(idx_dir / "ids.json", {"ids": ids})
    rec, added, _ = change_catalogue(fresh_ws, new_image())

    def crash(_: Path) -> None:
        raise KeyboardInterrupt("power cut")  # not an Exception: nothing on the way may swallow it

    sync = IndexSync(fresh_ws, rec.store, "color-texture", start_thread=False, before_swap=crash)
    with pytest.raises(KeyboardInterrupt):
        sync.checkpoint()
    old = load_index(idx_dir)
    assert old.name == "annoy" and len(old) == len(ids)  # the old index still serves
    assert idx_dir.with_name(idx_dir.name + ".rebuild").exists()
    assert index_behind(fresh_ws, rec.store, "color-texture")
    # "next start": a new sync cleans the half-done rebuild and runs it again
    again = IndexSync(fresh_ws, rec.store, "color-texture", start_thread=False)
    assert not idx_dir.with_name(idx_dir.name + ".rebuild").exists()
    assert again.checkpoint()["method"] == "rebuild"
    new = load_index(idx_dir)
    assert new.name == "annoy" and len(new) == rec.n_live
    assert nearest_id(fresh_ws, rec.vectors[rec.pos[added]]) == added
    assert (idx_dir / "similarity.json").exists() and not again.behind()


def test_background_thread_syncs_after_a_kick(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    rec, added, _ = change_catalogue(fresh_ws, new_image())
    sync = IndexSync(fresh_ws, rec.store, "color-texture", delay=0.05)  # behind at start: kicks itself
    try:
        for _ in range(200):
            if not sync.behind():
                break
            sync._stop.wait(0.05)
        assert not sync.behind()
        assert nearest_id(fresh_ws, rec.vectors[rec.pos[added]]) == added
    finally:
        sync.close()
