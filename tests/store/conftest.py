"""Every test of the SQL store runs twice: on SQLite and on a real PostgreSQL (tests/pg_server.py).

The PostgreSQL run sets ``LOOKALIKE_STORE_URL`` to a fresh database, which ``Store.for_workspace`` honours,
so a test written against the default store covers both without a change.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import pg_url, postgres  # noqa: F401 - fixtures; the server is shared with other folders

BACKENDS = ["sqlite", "postgresql"]
FILE_ONLY = {"test_vectors"}  # modules that never open the SQL store


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] not in FILE_ONLY:
        metafunc.parametrize("store_url", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The store URL of this run; also the default of every ``Store.for_workspace`` call in the test."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        monkeypatch.delenv("LOOKALIKE_STORE_URL", raising=False)
        yield f"sqlite:///{tmp_path / 'lookalike.db'}"
    else:
        url = request.getfixturevalue("pg_url")  # dropped WITH (FORCE) afterwards: open pools do not block it
        monkeypatch.setenv("LOOKALIKE_STORE_URL", url)
        yield url
