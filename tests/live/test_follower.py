"""Two Recommenders on one store, as two processes would hold them: what one writes, the other replays from
the change feed, and both end with the same products, filters and exact similar lists."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lookalike.live.updater import Updater
from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import Recommender, UnknownProductError
from lookalike.store import changes

from .live_helpers import assert_scratch_lists, live_lists
from .test_updater import new_product


def pair(ws: Path) -> tuple[Updater, Updater]:
    a, b = Recommender.open(ws), Recommender.open(ws)
    return Updater(a, index_sync=False), Updater(b, index_sync=False)


def test_writes_of_one_are_replayed_by_the_other(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    up_a, up_b = pair(fresh_ws)
    a, b = up_a.rec, up_b.rec
    row, vec = new_product(up_a, new_image("circle", "Red"))
    up_a.add(row, vec)
    up_a.update("p0003", attributes={"colour": "Teal"})
    victim = a.similar("p0000", k=1, rerank="none")[0].product.id
    up_a.delete(victim)
    assert "new1" not in b.products  # nothing reaches b before it catches up

    assert up_b.follower.catch_up() == 3
    assert up_b.follower.catch_up() == 0  # one cheap query when nothing is new
    assert b.product("new1") == a.product("new1")
    with pytest.raises(UnknownProductError):
        b.similar(victim)
    assert live_lists(b) == live_lists(a)
    assert_scratch_lists(a, live_lists(a))
    teal = FilterSpec.parse(["colour:Teal"])
    assert [i.product.id for i in b.similar("p0001", k=3, filters=teal, rerank="none")] == \
           [i.product.id for i in a.similar("p0001", k=3, filters=teal, rerank="none")]
    assert "p0003" in [i.product.id for i in b.similar("p0001", k=60, filters=teal, rerank="none")]


def test_a_writer_first_replays_what_others_wrote(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    """b never polled, yet its write is planned on a's state: both end with the lists a rebuild would make."""
    up_a, up_b = pair(fresh_ws)
    r1, v1 = new_product(up_a, new_image("circle", "Red", seed=1), pid="n1")
    r2, v2 = new_product(up_b, new_image("circle", "Red", seed=2), pid="n2")
    up_a.add(r1, v1)
    up_b.add(r2, v2)
    up_a.follower.catch_up()
    assert live_lists(up_a.rec) == live_lists(up_b.rec)
    assert_scratch_lists(up_b.rec, live_lists(up_b.rec))
    assert {"n1", "n2"} <= set(up_a.rec.pos) and {"n1", "n2"} <= set(up_b.rec.pos)


def test_replay_is_idempotent_for_changes_already_loaded(fresh_ws: Path, new_image: Callable[..., object]) -> None:
    """A process that opened the store after a write but from an older feed position replays it harmlessly."""
    up_a = Updater(Recommender.open(fresh_ws), index_sync=False)
    row, vec = new_product(up_a, new_image("square", "Blue"))
    up_a.add(row, vec)
    up_a.delete("p0007")
    late = Recommender.open(fresh_ws)
    late.change_seq = 0  # as if the feed position was read just before those writes
    up_late = Updater(late, index_sync=False)
    assert up_late.follower.catch_up() == 2
    assert live_lists(late) == live_lists(up_a.rec) and late.n_live == up_a.rec.n_live


def test_process_lock_excludes_a_second_holder(fresh_ws: Path) -> None:
    store = Recommender.open(fresh_ws, load_encoder=False).store
    order: list[str] = []
    held = threading.Event()

    def other() -> None:
        held.wait()
        with changes.process_lock(store):  # flock on its own file description: waits for the main thread
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with changes.process_lock(store):
        held.set()
        t.join(0.3)
        order.append("main")
    t.join()
    assert order == ["main", "other"]
    with pytest.raises(ValueError, match="valid"), changes.process_lock(store, "nope"):
        pass


def test_click_statistics_reach_every_process_once(fresh_ws: Path) -> None:
    """Events one process accepts count there at once, in the other on its poll, and never twice."""
    from lookalike.service.routes.events import EventIn, store_events
    from lookalike.store.tables import Event

    up_a, up_b = pair(fresh_ws)
    a, b = up_a.rec, up_b.rec
    assert a.event_feed is not None and b.event_feed is not None
    store_events(a, [EventIn(type="impression", product_id="p0004", source_product_id="p0000", position=3),
                     EventIn(type="click", product_id="p0004", source_product_id="p0000", position=3)])
    assert a.feedback.total_c == 1 and b.feedback.total_c == 0
    assert b.event_feed.catch_up() == 2 and a.event_feed.catch_up() == 0  # a counted its own already
    assert b.feedback.pairs == a.feedback.pairs and b.event_feed.catch_up() == 0

    # PostgreSQL may commit ids out of order: an id below the highest seen, committed late, still counts once
    def insert(id_: int) -> None:
        with a.store.session() as s, s.begin():
            s.add(Event(id=id_, type="click", product_id="p0008", source_product_id="p0000", position=0))

    high = b.event_feed.high
    insert(high + 5)
    assert b.event_feed.catch_up() == 1
    insert(high + 2)
    insert(high + 9)
    assert b.event_feed.catch_up() == 2 and b.feedback.total_c == 4

    # a process started now loads every stored event once
    c = Recommender.open(fresh_ws, load_encoder=False)
    assert c.feedback.pairs == b.feedback.pairs and c.feedback.total_c == 4
    assert Updater(c, index_sync=False).follower.events.catch_up() == 0  # type: ignore[union-attr]
