"""POST /api/events: 202 and stored; clicks re-rank /similar at once; ?rerank=none keeps the visual order."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.recommender import Recommender
from lookalike.service.app import create_app
from lookalike.settings import Settings


@pytest.fixture
def own(workspace: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Recommender]]:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    rec = Recommender.open(ws, settings=Settings(workspace=ws))
    with TestClient(create_app(Settings(workspace=ws), recommender=rec)) as client:
        yield client, rec


def ids(client: TestClient, pid: str, **params: str) -> list[str]:
    r = client.get(f"/api/products/{pid}/similar", params={"k": "5", **params})
    assert r.status_code == 200, r.text
    return [it["product"]["id"] for it in r.json()["data"]]


def test_events_are_stored_and_rerank(own: tuple[TestClient, Recommender]) -> None:
    client, rec = own
    visual = ids(client, "p0000", rerank="none")
    assert ids(client, "p0000") == visual  # no events yet: same order
    fifth = visual[4]
    for _ in range(30):
        batch = [{"type": "impression", "product_id": p, "source_product_id": "p0000", "position": i}
                 for i, p in enumerate(visual)]
        assert client.post("/api/events", json=batch).status_code == 202
        r = client.post("/api/events", json={"type": "click", "product_id": fifth,
                                             "source_product_id": "p0000", "position": 4})
        assert r.status_code == 202 and r.json() == {"accepted": 1}
    assert ids(client, "p0000")[0] == fifth
    assert ids(client, "p0000", rerank="none") == visual
    counts = {(t, p): n for t, p, s, _, n in rec.store.event_counts() if s == "p0000" and p == fifth}
    assert counts == {("impression", fifth): 30, ("click", fifth): 30}
    # a restart keeps the feedback: the stored events are folded in again
    again = Recommender.open(rec.workspace.root, load_encoder=False)
    assert again.similar("p0000", k=5)[0].product.id == fifth


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"type": "view", "product_id": "p0001"}, 422, "type"),
    ({"type": "click", "product_id": "p0001", "position": -1}, 422, "position"),
    ({"type": "click", "product_id": "nope"}, 404, "nope"),
    ({"type": "click", "product_id": "p0001", "source_product_id": "gone"}, 404, "gone"),
    ([], 422, "empty"),
])
def test_bad_events_say_what_to_fix(own: tuple[TestClient, Recommender], body: object, status: int,
                                    words: str) -> None:
    client, _ = own
    r = client.post("/api/events", json=body)
    assert r.status_code == status and words in r.json()["detail"]


def test_bad_rerank_value(own: tuple[TestClient, Recommender]) -> None:
    r = own[0].get("/api/products/p0000/similar", params={"rerank": "magic"})
    assert r.status_code == 422 and "rerank" in r.json()["detail"]
