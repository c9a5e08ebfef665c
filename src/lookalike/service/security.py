"""API keys: ``X-API-Key`` on every write, and optionally on reads too.

The server never stores a key, only its SHA-256 hex digest (``LOOKALIKE_API_KEYS='["<digest>", ...]'``;
``lookalike hash-key`` prints the digest of a key). A request without the header gets 401, one with a key
that matches no digest gets 403, and so does any write while no digest is configured (writes are then off).
With ``LOOKALIKE_REQUIRE_KEY_FOR_READS=true`` the same check guards every other route except the ops and
documentation ones (``OPEN_PATHS``), so the storefront is then closed to browsers without the key.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.settings import Settings

HEADER = "X-API-Key"
OPEN_PATHS = ("/health", "/metrics", "/docs", "/redoc", "/openapi.json", "/static/")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


def key_status(key: str | None, digests: Sequence[str]) -> tuple[int, str] | None:
    """None when ``key`` is valid, else (status, detail)."""
    if not key:
        return 401, f"this endpoint needs an API key: send it in the {HEADER} header"
    if not digests:
        return 403, ("no API keys are configured on this server, so writes are off: set LOOKALIKE_API_KEYS to "
                     "a JSON list of SHA-256 digests (`lookalike hash-key` prints one)")
    digest = hash_key(key)
    # compare against every digest, always: the time taken says nothing about which one nearly matched
    ok = [hmac.compare_digest(digest, d.strip().lower()) for d in digests]
    if not any(ok):
        return 403, f"the {HEADER} key is not valid for this server"
    return None


async def require_write_key(request: Request) -> None:
    """FastAPI dependency of every write route."""
    settings: Settings = request.app.state.lookalike.settings
    bad = key_status(request.headers.get(HEADER), settings.api_keys)
    if bad is not None:
        raise HTTPException(bad[0], bad[1], headers={"WWW-Authenticate": "ApiKey"} if bad[0] == 401 else None)


class ReadKeyMiddleware:
    """Asks for the key on every route but the open ones (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, digests: Sequence[str]) -> None:
        self.app, self.digests = app, list(digests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or scope["path"].startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        bad = key_status(headers.get(HEADER.lower()), self.digests)
        if bad is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": bad[1].replace("this endpoint", "this server")}).encode()
        extra: list[tuple[bytes, bytes]] = [(b"www-authenticate", b"ApiKey")] if bad[0] == 401 else []
        await send({"type": "http.response.start", "status": bad[0],
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> None:
    """Add the read-key check when the settings ask for it (call before adding CORS, which must wrap it)."""
    if settings.require_key_for_reads:
        kwargs: dict[str, Any] = {"digests": settings.api_keys}
        app.add_middleware(ReadKeyMiddleware, **kwargs)
