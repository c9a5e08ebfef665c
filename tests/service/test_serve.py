"""serve(): a real uvicorn with two worker processes, each loading its own Recommender from LOOKALIKE_* env."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_two_workers_pass_settings(workspace: Path, tmp_path: Path, n_products: int) -> None:
    port = free_port()
    code = ("from lookalike.service.app import serve; from lookalike.settings import Settings; "
            f"serve({str(workspace)!r}, port={port}, workers=2, settings=Settings(max_k=7), log_level='warning')")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.get(f"{url}/health", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not healthy within 90 s:\n" + log.read_text()
            time.sleep(0.2)
        assert r.json() == {"status": "ok", "products": n_products, "encoder": "color-texture"}
        # the settings object given to serve() reached the worker processes
        r = httpx.get(f"{url}/api/products/p0000/similar", params={"k": 8})
        assert r.status_code == 422 and "between 1 and 7" in r.json()["detail"]
        # a worker accepts connections only once loaded, so no request ever meets a 503 "loading"
        statuses = {httpx.get(f"{url}/api/products/p0000/similar", params={"k": 3}, timeout=10).status_code
                    for _ in range(40)}
        assert statuses == {200}
    finally:
        proc.terminate()
        proc.wait(30)
