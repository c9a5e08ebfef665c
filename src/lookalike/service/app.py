"""The FastAPI app: REST API, storefront, health and metrics over one Recommender.

``create_app`` loads the workspace in a background thread at start-up, so ``/health`` answers "loading"
(503) until the store, vectors, index and encoder are in memory, then "ok". ``serve`` runs it on uvicorn;
with several workers each process loads its own Recommender through the ``app_from_env`` factory, before
it starts accepting connections, so no request ever lands on a worker that is still loading.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from lookalike import __version__
from lookalike.recommender import Recommender
from lookalike.service.deps import ServiceState, health_body
from lookalike.service.fastpath import SimilarFastPath
from lookalike.service.metrics import Metrics, MetricsMiddleware
from lookalike.service.routes import events, images, product_writes, products, search, storefront
from lookalike.service.routes import goes_with as goes_with_routes
from lookalike.service.routes.storefront import PageError, error_page
from lookalike.service.schemas import Health
from lookalike.service.security import install as install_security
from lookalike.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


def _load(state: ServiceState) -> None:
    s = state.settings
    try:
        state.attach(Recommender.open(Path(s.workspace), store_url=s.store_url, settings=s), freeze_gc=True)
    except Exception as e:  # whatever went wrong is reported by /health, not by a dead process
        log.exception("could not load workspace %s", s.workspace)
        state.load_error = f"{type(e).__name__}: {e}"


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else "request"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if (exc.status_code == 404 and request.scope.get("route") is None
                and "text/html" in request.headers.get("accept", "")):
            return error_page(request, PageError(404, "Page not found", f"There is no page at {request.url.path}."))
        detail = exc.detail
        if exc.status_code == 404 and request.scope.get("route") is None:
            detail = f"no route {request.method} {request.url.path}: see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}: see /docs for the API"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return error_page(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); this is a bug, please report it"},
                            status_code=500)


def create_app(settings: Settings | None = None, recommender: Recommender | None = None,
               load_in_background: bool = True) -> FastAPI:
    """The whole service. Give ``recommender`` to serve one already open (tests, notebooks).

    With ``load_in_background`` the server listens at once and answers 503 "loading" until the workspace
    is in memory; without, start-up waits for it, so a worker accepts no connection before it is ready
    (what several workers behind one socket want: the ready ones take all the traffic).
    """
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics, recommender=recommender)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.recommender is not None:
            await anyio.to_thread.run_sync(state.attach, state.recommender)
        else:
            state.load_error = None
            if load_in_background:
                threading.Thread(target=_load, args=(state,), name="lookalike-load", daemon=True).start()
            else:
                await anyio.to_thread.run_sync(_load, state)
        yield

    otel = settings.otel
    app = FastAPI(title="lookalike", version=__version__, lifespan=lifespan,
                  telemetry={"tracing": otel, "metrics": otel, "logs": otel},
                  description="Visually similar products and photo search over a built workspace. "
                              "Every error is JSON {\"detail\": \"...\"} saying what to change.")
    app.state.lookalike = state
    _install_error_handlers(app)
    # the hot similar-by-id route first: routes are matched in order
    app.include_router(goes_with_routes.router)  # before products: its /{id:path} would take /goes-with
    app.include_router(products.router)

    @app.get("/health", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    def health() -> Response:
        """200 with status "ok" once the workspace is loaded; 503 "loading" before, 503 "error" if it failed."""
        status, body = health_body(state)
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus() -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    app.include_router(product_writes.router)
    app.include_router(events.router)
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(storefront.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(SimilarFastPath, state=state)  # first added, so innermost: key, CORS and metrics apply
    install_security(app, settings)  # inside CORS, so preflight requests never need a key
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"], allow_headers=["*"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker serving: each worker reads LOOKALIKE_* and loads its own Recommender."""
    return create_app(Settings(), load_in_background=False)


def settings_env(settings: Settings) -> dict[str, str]:
    """LOOKALIKE_* variables that make ``Settings()`` in a worker process equal ``settings``."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"LOOKALIKE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def serve(workspace: Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          settings: Settings | None = None, log_level: str = "info", access_log: bool = False) -> None:
    """Serve the API and storefront of ``workspace`` until interrupted."""
    import uvicorn

    ws = Path(workspace).resolve()
    if not (ws / "build.json").exists():
        raise FileNotFoundError(f"{ws} is not a built workspace (no build.json): "
                                f"run `lookalike build CATALOGUE --workspace {ws}` first")
    settings = (settings or Settings()).model_copy(update={"workspace": ws, "host": host, "port": port,
                                                           "workers": workers})
    log.info("serving %s on http://%s:%d with %d worker(s)", ws, host, port, workers)
    kw: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": access_log}
    if workers <= 1:
        uvicorn.run(create_app(settings), **kw)
    else:
        os.environ.update(settings_env(settings))
        uvicorn.run("lookalike.service.app:app_from_env", factory=True, workers=workers, **kw)
