"""The plain similar-by-id request answered without the framework: the same bytes as the route, or declined."""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi.testclient import TestClient

from lookalike.service.deps import ServiceState
from lookalike.service.fastpath import SimilarFastPath
from lookalike.service.security import hash_key


def fast_path(client: TestClient) -> SimilarFastPath:
    return SimilarFastPath(app=None, state=client.app.state.lookalike)  # type: ignore[arg-type]


def test_answers_plain_requests_with_the_routes_bytes(client: TestClient, odd_id: str) -> None:
    fp = fast_path(client)
    for pid in ("p0000", "p0031", odd_id):
        for query in ("", "k=5", "k=3&rerank=none", "k=1&k=7", "k=%35", "&k=2&"):
            assert fp.answer(pid, query.encode()) is not None, (pid, query)
            url = f"/api/products/{quote(pid, safe='')}/similar"
            fast = client.get(f"{url}?{query}")
            # a parameter the fast path does not take (with its default value) sends the request to the route
            slow = client.get(f"{url}?{query}&same_category=false")
            assert fast.status_code == slow.status_code == 200
            assert fast.content == slow.content, (pid, query)
            assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
            assert fast.headers["content-length"] == slow.headers["content-length"]
    assert client.get("/api/products/p0000/similar?k=1&k=7").json()["count"] == 7  # the last k wins, as in the route


def test_declines_everything_else(client: TestClient, make_client: Callable[..., TestClient]) -> None:
    fp = fast_path(client)
    build_k = client.app.state.lookalike.recommender.build_info["k"]
    declined = [("nope", ""), ("p0000", "k=0"), ("p0000", f"k={build_k + 1}"), ("p0000", "k=ten"), ("p0000", "k="),
                ("p0000", "k=%C2%B2"), ("p0000", "rerank=best"), ("p0000", "filter=colour:Blue"),
                ("p0000", "same_category=true"), ("p0000", "max_per=colour:1")]
    for pid, query in declined:
        assert fp.answer(pid, query.encode()) is None, (pid, query)
    # and the route gives its own answers to those
    assert client.get("/api/products/nope/similar").status_code == 404
    assert client.get("/api/products/p0000/similar?k=ten").status_code == 422
    assert client.get(f"/api/products/p0000/similar?k={build_k + 1}").json()["count"] == build_k + 1  # live search
    capped = fast_path(make_client(max_k=3))
    assert capped.answer("p0000", b"k=4") is None and capped.answer("p0000", b"k=3") is not None
    loading = SimilarFastPath(app=None, state=ServiceState(settings=client.app.state.lookalike.settings,  # type: ignore[arg-type]
                                                           metrics=client.app.state.lookalike.metrics))
    assert loading.answer("p0000", b"") is None


def test_metrics_and_keys_still_apply(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for _ in range(3):
        assert client.get("/api/products/p0000/similar?k=4").status_code == 200
    text = client.get("/metrics").text
    assert 'lookalike_http_requests_total{method="GET",route="/api/products/{product_id}/similar",status="200"} 3.0' \
        in text
    assert 'lookalike_stage_seconds_count{stage="similar"} 3.0' in text
    closed = make_client(require_key_for_reads=True, api_keys=[hash_key("secret")])
    assert closed.get("/api/products/p0000/similar?k=4").status_code == 401
    assert closed.get("/api/products/p0000/similar?k=4", headers={"X-API-Key": "secret"}).status_code == 200
