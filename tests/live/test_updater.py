"""Each change type leaves the index rows, the similar lists (memory and store) and the filters exact,
right after the call, with no rebuild."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lookalike.imaging import content_hash
from lookalike.live.updater import ProductExistsError, Updater
from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import Recommender, UnknownProductError
from lookalike.store.sql import ProductRow

from .live_helpers import assert_scratch_lists, live_lists, stored_lists


def open_updater(ws: Path) -> tuple[Recommender, Updater]:
    rec = Recommender.open(ws)
    return rec, Updater(rec, index_sync=False)


def new_product(up: Updater, img: object, pid: str = "new1", colour: str = "Red") -> tuple[ProductRow, object]:
    vec = up.embed([img])[0]  # type: ignore[list-item]
    row = ProductRow(pid, f"{colour} circle new", "circle", None, content_hash(img.tobytes()),  # type: ignore[attr-defined]
                     {"colour": colour, "gender": "Women", "in_stock": True})
    return row, vec


def assert_exact(rec: Recommender) -> None:
    live = live_lists(rec)
    assert_scratch_lists(rec, live)
    assert stored_lists(rec) == {p: ids for p, ids in live.items() if ids}


def test_add_enters_own_and_existing_lists(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    rec, up = open_updater(fresh_ws)
    n_before = rec.n_live
    row, vec = new_product(up, new_image("circle", "Red"))
    change = up.add(row, vec)
    assert change.op == "added" and rec.n_live == n_before + 1
    own = [i.product.id for i in rec.similar("new1", k=10, rerank="none")]
    assert len(own) == 10 and all(rec.product(p).category == "circle" for p in own[:3])
    holders = [p for p, ids in live_lists(rec).items() if "new1" in ids]
    assert holders, "a red circle must enter the lists of its nearest red circles"
    assert "new1" in [i.product.id for i in rec.similar(holders[0], k=10, rerank="none")]
    assert_exact(rec)
    # filters see the new row at once
    got = rec.similar(own[0], k=5, filters=FilterSpec.parse(["in_stock:True"]), rerank="none")
    assert [i.product.id for i in got] == ["new1"]
    with pytest.raises(ProductExistsError):
        up.add(row, vec)


def test_delete_vanishes_from_every_list(fresh_ws: Path) -> None:
    rec, up = open_updater(fresh_ws)
    victim = rec.similar("p0000", k=1, rerank="none")[0].product.id
    holders = [p for p, ids in live_lists(rec).items() if victim in ids]
    assert len(holders) >= 2
    up.delete(victim)
    assert rec.product(victim) is None
    with pytest.raises(UnknownProductError):
        rec.similar(victim)
    for p in rec.pos:
        ids = [i.product.id for i in rec.similar(p, k=10, rerank="none")]
        assert victim not in ids and len(ids) == 10
    # a live search (k beyond the stored lists, or filtered) never finds it either
    assert victim not in [i.product.id for i in rec.similar(holders[0], k=40, rerank="none")]
    assert_exact(rec)
    assert rec.store.get_product(victim) is None
    with pytest.raises(UnknownProductError):
        up.delete(victim)


def test_attribute_change_applies_to_filters_without_reembedding(fresh_ws: Path) -> None:
    rec, up = open_updater(fresh_ws)
    src = "p0000"
    first = rec.similar(src, k=1, rerank="none")[0].product.id
    vec_before = rec.vectors[rec.pos[first]].copy()
    up.update(first, attributes={"in_stock": False})
    got = rec.similar(src, k=5, filters=FilterSpec.parse(excludes=["in_stock:False"]), rerank="none")
    assert first not in [i.product.id for i in got] and len(got) == 5
    assert (rec.vectors[rec.pos[first]] == vec_before).all()
    assert rec.store.get_product(first).attributes["in_stock"] is False
    up.update(first, attributes={"in_stock": None}, title="Renamed")
    assert "in_stock" not in rec.product(first).attributes and rec.product(first).title == "Renamed"
    assert_exact(rec)


def test_image_change_moves_the_product(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    rec, up = open_updater(fresh_ws)
    pid = "p0000"  # a red circle
    img = new_image("square", "Blue", seed=5)
    row, vec = new_product(up, img, pid=pid, colour="Blue")
    assert up.upsert(row, vec).op == "image_changed"
    top = [i.product for i in rec.similar(pid, k=3, rerank="none")]
    assert all(p.category == "square" for p in top)
    assert_exact(rec)


def test_changes_survive_reopen(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    rec, up = open_updater(fresh_ws)
    row, vec = new_product(up, new_image(), pid="kept")
    up.add(row, vec)
    gone = rec.similar("p0001", k=1, rerank="none")[0].product.id
    up.delete(gone)
    up.update("p0002", attributes={"colour": "Teal"})
    want = {p: [i.product.id for i in rec.similar(p, k=10, rerank="none")] for p in rec.pos}
    again = Recommender.open(fresh_ws, load_encoder=False)
    assert {p: [i.product.id for i in again.similar(p, k=10, rerank="none")] for p in again.pos} == want
    assert again.product("p0002").attributes["colour"] == "Teal" and again.product(gone) is None
