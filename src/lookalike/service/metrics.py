"""Prometheus metrics: request counts and latency per route, and latency per pipeline stage.

Each app owns a private CollectorRegistry, so several apps (tests, workers in one process) never collide.
The middleware is plain ASGI rather than BaseHTTPMiddleware because the latter costs a task per request.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STAGES = ("decode", "encode", "search", "store", "similar")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lookalike_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("lookalike_http_request_seconds", "HTTP request latency by route template",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.stage = Histogram("lookalike_stage_seconds",
                               "Time spent per stage: decode (image bytes), encode (model), search (index), "
                               "store (product rows into the response), similar (similar-by-id, precomputed or live)",
                               ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        # children resolved once: .labels() validates and takes a lock on every call
        self._stage = {s: self.stage.labels(stage=s) for s in STAGES}
        self._req: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._req.get(key)
        if children is None:
            children = self._req[key] = (self.requests.labels(method, route, str(status)),
                                         self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        child = self._stage.get(stage)
        if child is None:
            child = self._stage[stage] = self.stage.labels(stage=stage)
        child.observe(seconds)

    @contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe_stage(stage, time.perf_counter() - t0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request under its route template (``/api/products/{product_id}``), never the raw
    path, so label cardinality stays bounded whatever clients send."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # path_format drops convertors: "/images/{product_id}" for "/images/{product_id:path}"
            template = getattr(route, "path_format", None) or ("/static" if scope["path"].startswith("/static/")
                                                         else "<unmatched>")
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - t0)
