"""create_app: start-up loading and /health, /metrics, /docs, error format, and serve()'s settings hand-off."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.recommender import Recommender
from lookalike.service import app as app_module
from lookalike.service.app import create_app, serve, settings_env
from lookalike.settings import Settings


def wait_ready(client: TestClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/health")
        if r.status_code == 200 or r.json()["status"] == "error":
            return r.json()
        time.sleep(0.05)
    raise AssertionError("the service never became ready")


def test_health_ok(client: TestClient, n_products: int) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "products": n_products, "encoder": "color-texture"}


def test_loads_workspace_at_startup_and_reports_loading(workspace: Path, n_products: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_open = Recommender.open

    def slow_open(*args: object, **kwargs: object) -> Recommender:
        release.wait(30)  # hold the loading state until the test has looked at it
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app_module.Recommender, "open", slow_open)
    with TestClient(create_app(Settings(workspace=workspace))) as client:
        r = client.get("/health")
        assert r.status_code == 503
        assert r.json() == {"status": "loading", "products": None, "encoder": None}
        r = client.get("/api/products/p0000/similar")
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json() == {"detail": "the service is still loading its workspace; retry when GET /health says ok"}
        r = client.get("/", headers={"accept": "text/html"})
        assert r.status_code == 503 and "loading its catalogue" in r.text
        release.set()
        assert wait_ready(client) == {"status": "ok", "products": n_products, "encoder": "color-texture"}
        assert client.get("/api/products/p0000/similar").status_code == 200


def test_missing_workspace_reports_error(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(workspace=tmp_path / "nothing"))) as client:
        body = wait_ready(client)
        assert body["status"] == "error"
        assert body["detail"].startswith("FileNotFoundError: ") and "run `lookalike build" in body["detail"]
        r = client.get("/health")
        assert r.status_code == 503
        r = client.get("/api/products")
        assert r.status_code == 503
        assert r.json()["detail"].startswith("the service could not load its workspace: FileNotFoundError")


def test_metrics(client: TestClient) -> None:
    client.get("/api/products/p0000/similar")
    client.get("/api/products/p0000/similar")
    client.get("/api/products/nope")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert ('lookalike_http_requests_total{method="GET",route="/api/products/{product_id}/similar",status="200"} 2.0'
            in text)
    assert 'lookalike_http_requests_total{method="GET",route="/api/products/{product_id}",status="404"} 1.0' in text
    assert 'lookalike_stage_seconds_count{stage="similar"} 2.0' in text
    for stage in ("decode", "encode", "search", "store"):
        assert f'lookalike_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'lookalike_http_request_seconds_bucket{le="0.005",method="GET",route="/api/products/{product_id}/similar"}' \
        in text


def test_metrics_are_per_app(make_client) -> None:  # type: ignore[no-untyped-def]
    a, b = make_client(), make_client()
    a.get("/api/products/p0000")
    assert 'route="/api/products/{product_id}",status="200"} 1.0' in a.get("/metrics").text
    assert 'route="/api/products/{product_id}"' not in b.get("/metrics").text


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/api/products", "/api/products/{product_id}", "/api/products/{product_id}/similar",
                 "/api/search", "/images/{product_id}", "/health", "/metrics"):
        assert path in spec["paths"], path
    params = {p["name"] for p in spec["paths"]["/api/products/{product_id}/similar"]["get"]["parameters"]}
    assert params == {"product_id", "k", "same_category", "filter", "exclude", "max_per", "rerank"}
    body = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "/" not in spec["paths"]  # storefront pages stay out of the API docs


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404
    assert r.json() == {"detail": "no route GET /api/nothing: see /docs for the API"}
    r = client.put("/api/products/p0000")  # DELETE exists since the live catalogue (issue 6); PUT does not
    assert r.status_code == 405
    assert r.json() == {"detail": "PUT is not allowed on /api/products/p0000: see /docs for the API"}


def test_settings_env_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(workspace=tmp_path, max_k=7, allow_image_urls=True, cors_origins=["http://a.example"])
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert again.model_dump() == s.model_dump()


def test_serve_refuses_an_unbuilt_workspace(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a built workspace"):
        serve(tmp_path)


def test_cors_when_configured(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(cors_origins=["http://shop.example"])
    r = client.get("/api/products/p0000", headers={"origin": "http://shop.example"})
    assert r.headers["access-control-allow-origin"] == "http://shop.example"


def test_load_before_serving(workspace: Path, n_products: int) -> None:
    with TestClient(create_app(Settings(workspace=workspace), load_in_background=False)) as client:
        r = client.get("/health")  # start-up returned only once the workspace was in memory
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        assert r.json()["products"] == n_products


def test_otel_setting_reaches_fastapi(make_client) -> None:  # type: ignore[no-untyped-def]
    # off by default (FastAPI's per-request provider check costs ~5 % of a similar-by-id request); on, it serves too
    assert make_client().app._telemetry["tracing"] is False
    on = make_client(otel=True)
    assert on.app._telemetry["tracing"] is True and on.get("/api/products/p0000/similar").status_code == 200
