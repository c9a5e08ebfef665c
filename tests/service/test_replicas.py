"""Two real `lookalike serve` processes on one PostgreSQL store with pgvector vectors (issue 9): a write
acknowledged by one is served by the other at once (new products, attribute filters, similar lists,
goes-with, deletions), clicks accepted by one re-rank the other's lists within a poll, and the shared
pgvector index follows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from pg_server import pg_url, postgres  # noqa: F401 - fixtures

from lookalike.demo import make_catalogue
from lookalike.index.pgvector import pg_conninfo
from lookalike.pipeline import build
from lookalike.service.security import hash_key

from .test_kill9 import KEY, free_port, png, wait_ready

H = {"X-API-Key": KEY}


def serve(ws: Path, url: str, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "LOOKALIKE_STORE_URL": url, "LOOKALIKE_API_KEYS": json.dumps([hash_key(KEY)]),
           "LOOKALIKE_INDEX_SYNC_SECONDS": "0.2"}
    exe = Path(sys.executable).with_name("lookalike")
    proc = subprocess.Popen([str(exe), "serve", str(ws), "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", proc


def lists(c: httpx.Client) -> dict[str, list[str]]:
    ids = [p["id"] for p in c.get("/api/products", params={"limit": 100}).json()["data"]]
    return {pid: [it["product"]["id"] for it in
                  c.get(f"/api/products/{pid}/similar", params={"k": 10, "rerank": "none"}).json()["data"]]
            for pid in ids}


def add(c: httpx.Client, pid: str, i: int) -> httpx.Response:
    return c.post("/api/products", headers=H, files={"image": ("i.png", png(i), "image/png")},
                  data={"product": json.dumps({"id": pid, "title": f"new {i}", "category": "circle",
                                               "attributes": {"colour": "Red"}})})


@pytest.mark.timeout(600)
def test_two_replicas_serve_each_others_writes_at_once(pg_url: str, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_STORE_URL", pg_url)
    csv = make_catalogue(tmp_path / "catalogue", n=60)
    ws = tmp_path / "ws"  # one workspace folder: what a shared volume gives every replica
    build(csv, ws, encoder="color-texture", index="pgvector", k=10, show_progress=False, num_workers=0)
    log = tmp_path / "servers.log"
    (base_a, a), (base_b, b) = serve(ws, pg_url, log), serve(ws, pg_url, log)
    try:
        wait_ready(base_a, a)
        wait_ready(base_b, b)
        with httpx.Client(base_url=base_a, timeout=30) as ca, httpx.Client(base_url=base_b, timeout=30) as cb:
            assert lists(ca) == lists(cb)

            # B's goes-with model is loaded before the write, so it must catch up with n1 itself
            assert len(cb.get("/api/products/p0000/goes-with", params={"category": "square"}).json()["data"]) == 10

            # a new product, written through A, read through B on the very next request
            r = add(ca, "n1", 1)
            assert r.status_code == 201, r.text
            got = cb.get("/api/products/n1")
            assert got.status_code == 200 and got.json() == ca.get("/api/products/n1").json()
            after = lists(cb)
            assert after == lists(ca) and len(after["n1"]) == 10
            assert any("n1" in ids for pid, ids in after.items() if pid != "n1"), "n1 entered no list on B"
            assert add(cb, "n1", 1).status_code == 409  # ids stay unique across replicas
            gw = cb.get("/api/products/n1/goes-with", params={"category": "square", "k": 3}).json()["data"]
            assert len(gw) == 3
            assert "n1" in [it["product"]["id"] for it in
                            cb.get("/api/products/p0001/goes-with", params={"category": "circle", "k": 100}).json()["data"]]

            # clicks accepted by A re-rank B's list too, once B's poll (every second) folds them in
            shown = [it["product"]["id"] for it in
                     ca.get("/api/products/p0002/similar", params={"k": 10, "rerank": "none"}).json()["data"]]
            events = [{"type": "impression", "product_id": pid, "source_product_id": "p0002", "position": i}
                      for i, pid in enumerate(shown)]
            events += [{"type": "click", "product_id": shown[-1], "source_product_id": "p0002", "position": 9}] * 5
            for _ in range(20):
                assert ca.post("/api/events", json=events).status_code == 202

            def order(c: httpx.Client) -> list[str]:
                return [it["product"]["id"] for it in
                        c.get("/api/products/p0002/similar", params={"k": 10}).json()["data"]]

            clicked = order(ca)
            assert shown[-1] in clicked[:5]  # A counts its own clicks at once; B, without them, shows `shown`
            deadline = time.monotonic() + 15
            while order(cb) != clicked and time.monotonic() < deadline:
                time.sleep(0.2)
            assert order(cb) == clicked

            # an attribute change through B filters on A at once
            assert cb.patch("/api/products/p0003", headers=H, json={"attributes": {"colour": "Teal"}}).status_code == 200
            assert [p["id"] for p in ca.get("/api/products", params={"colour": "Teal"}).json()["data"]] == ["p0003"]
            sim = ca.get("/api/products/p0001/similar", params={"k": 5, "filter": "colour:Teal"}).json()["data"]
            assert [it["product"]["id"] for it in sim] == ["p0003"]

            # a deletion through A is gone from B's product, listing and every list
            victim = after["p0000"][0]
            assert ca.delete(f"/api/products/{victim}", headers=H).status_code == 200
            assert cb.get(f"/api/products/{victim}").status_code == 404
            final = lists(cb)
            assert victim not in final and not any(victim in ids for ids in final.values())
            assert final == lists(ca)

        # the shared pgvector index catches up from the journal (index sync, in the background)
        deadline = time.monotonic() + 30
        with psycopg.connect(pg_conninfo(pg_url)) as conn:
            while True:
                n = conn.execute("SELECT count(*) FROM lookalike_vectors").fetchone()[0]
                if n == 60 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            # every row, the built ones and n1, carries what the SQL filters match on
            tagged = conn.execute("SELECT count(*) FROM lookalike_vectors WHERE attrs ? 'category' "
                                  "AND attrs ? 'colour'").fetchone()[0]
        assert n == 60 and tagged == 60  # 60 built + n1 - the deleted one
    finally:
        for p in (a, b):
            p.terminate()
        for p in (a, b):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
