"""A real HTTP server on 127.0.0.1 for the URL-image tests."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class LoopbackServer:
    base: str
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)

    def add(self, path: str, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None) -> str:
        self.routes[path] = (status, body, headers or {})
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture()
def http_server() -> Iterator[LoopbackServer]:
    server_state = LoopbackServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.hits[self.path] += 1
            status, body, headers = server_state.routes.get(self.path, (404, b"not found", {}))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
