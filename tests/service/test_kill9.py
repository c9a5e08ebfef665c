"""A real `lookalike serve` is SIGKILLed in the middle of a stream of writes; after a restart every write
it acknowledged is there (adds with their similar lists, attribute changes, deletions)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from lookalike.demo import COLOURS, SHAPES, draw_product
from lookalike.service.security import hash_key

KEY = "kill-nine-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(ws: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOKALIKE_API_KEYS": json.dumps([hash_key(KEY)]),
           "LOOKALIKE_INDEX_SYNC_SECONDS": "0.3"}  # checkpoints run during the stream, so the kill can hit one
    exe = Path(sys.executable).with_name("lookalike")
    return subprocess.Popen([str(exe), "serve", str(ws), "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server not ready after {timeout}s")


def png(i: int) -> bytes:
    buf = io.BytesIO()
    colour = list(COLOURS.values())[i % len(COLOURS)]
    draw_product(SHAPES[(i // 5) % len(SHAPES)], colour, np.random.default_rng(1000 + i)).save(buf, "PNG")
    return buf.getvalue()


def stream(base: str, acked: list[tuple[str, str, object]], stop: threading.Event) -> None:
    """Adds, attribute changes and deletions, one after another; records each acknowledged one."""
    h = {"X-API-Key": KEY}
    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                if i % 5 == 3:
                    victim = f"p{i // 5:04d}"
                    if c.delete(f"/api/products/{victim}", headers=h).status_code == 200:
                        acked.append(("delete", victim, None))
                elif i % 5 == 1:
                    pid = f"p{30 + i % 20:04d}"
                    r = c.patch(f"/api/products/{pid}", json={"attributes": {"stock": i}}, headers=h)
                    if r.status_code == 200:
                        acked.append(("patch", pid, i))
                else:
                    pid = f"k{i}"
                    r = c.post("/api/products", headers=h, files={"image": ("i.png", png(i), "image/png")},
                               data={"product": json.dumps({"id": pid, "title": f"kill {i}", "category": "circle",
                                                            "attributes": {"colour": "Red"}})})
                    if r.status_code == 201:
                        acked.append(("add", pid, None))
            except httpx.HTTPError:
                return  # the server is gone


@pytest.mark.timeout(600)
def test_acknowledged_writes_survive_sigkill(workspace: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    proc = start(ws, port, log)
    try:
        wait_ready(base, proc)
        acked: list[tuple[str, str, object]] = []
        stop = threading.Event()
        writer = threading.Thread(target=stream, args=(base, acked, stop), daemon=True)
        writer.start()
        while len(acked) < 25 and writer.is_alive():
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the writer has a request in flight: no clean shutdown
        proc.wait(30)
        stop.set()
        writer.join(30)
        assert len(acked) >= 25, log.read_text()[-3000:]

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(ws, port, log)
        wait_ready(base, proc)
        patched: dict[str, object] = {}
        deleted: set[str] = set()
        with httpx.Client(base_url=base, timeout=30) as c:
            for op, pid, value in acked:
                if op == "add":
                    assert c.get(f"/api/products/{pid}").status_code == 200, f"acknowledged add {pid} lost"
                    own = c.get(f"/api/products/{pid}/similar", params={"k": 10, "rerank": "none"}).json()["data"]
                    assert len(own) == 10
                elif op == "patch":
                    patched[pid] = value
                else:
                    deleted.add(pid)
            for pid, value in patched.items():
                if pid not in deleted:
                    assert c.get(f"/api/products/{pid}").json()["attributes"]["stock"] == value
            for pid in deleted:
                assert c.get(f"/api/products/{pid}").status_code == 404, f"acknowledged delete {pid} undone"
            # no list anywhere still holds a deleted product
            listed = [p["id"] for p in c.get("/api/products", params={"limit": 200}).json()["data"]]
            for pid in listed:
                got = c.get(f"/api/products/{pid}/similar", params={"k": 10, "rerank": "none"}).json()["data"]
                assert not deleted & {it["product"]["id"] for it in got}
            adds = [pid for op, pid, _ in acked if op == "add"]
            assert any(adds[0] in {it["product"]["id"] for it in
                                   c.get(f"/api/products/{p}/similar", params={"k": 10}).json()["data"]}
                       for p in listed), "an added product entered no list after the restart"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
