"""Alembic migrations, on SQLite and PostgreSQL: an empty database, a pre-migration one, and drift from tables.py."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect

from lookalike.store import migrate
from lookalike.store.sql import ProductRow, Store
from lookalike.store.tables import Base


def _diff(url: str) -> list:  # type: ignore[type-arg]
    engine = create_engine(migrate.engine_url(url))
    try:
        with engine.connect() as c:
            return compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_on_an_empty_database_match_tables_py(store_url: str) -> None:
    engine = create_engine(migrate.engine_url(store_url))
    assert migrate.upgrade(engine) == migrate.head()
    engine.dispose()
    # any column or table added to tables.py without a revision shows up here
    assert _diff(store_url) == []


def test_store_start_up_migrates_and_is_idempotent(store_url: str) -> None:
    store = Store(store_url)
    store.upsert_products([ProductRow("a", "Shirt", "Shirts", None, None, {"gender": "Men"})])
    store.engine.dispose()
    again = Store(store_url)  # already at head: nothing to do, data kept
    assert again.count() == 1
    with again.engine.connect() as c:
        assert migrate.current(c) == migrate.head()


def test_a_store_made_before_migrations_is_stamped_and_upgraded(store_url: str) -> None:
    engine = create_engine(migrate.engine_url(store_url))
    first = MetaData()
    for name in ("products", "similar_products", "events"):  # the schema of revision 0001, made by create_all
        Base.metadata.tables[name].to_metadata(first)
    first.create_all(engine)
    with engine.begin() as c:
        c.execute(Base.metadata.tables["products"].insert(),
                  [{"id": "old", "title": "t", "attributes": {}, "deleted": False, "updated_at": datetime.now(UTC)}])
    engine.dispose()
    store = Store(store_url)
    assert store.get_product("old") is not None
    assert inspect(store.engine).has_table("journal")
    store.engine.dispose()
    assert _diff(store_url) == []


def test_downgrade_to_nothing_and_back(store_url: str) -> None:
    engine = create_engine(migrate.engine_url(store_url))
    migrate.upgrade(engine)
    assert migrate.downgrade(engine, "base") is None
    assert not inspect(engine).has_table("products")
    assert migrate.upgrade(engine) == migrate.head()
    engine.dispose()
    assert _diff(store_url) == []


def test_engine_url_picks_an_installed_postgres_driver() -> None:
    assert migrate.engine_url("sqlite:///x.db") == "sqlite:///x.db"
    url = migrate.engine_url("postgres://u@h/db")
    assert url in ("postgresql://u@h/db", "postgresql+psycopg://u@h/db")
    assert migrate.engine_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_the_store_url_comes_from_the_environment_and_the_cli_migrates_it(store_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    store = Store.for_workspace(tmp_path)  # LOOKALIKE_STORE_URL, set by conftest on the PostgreSQL run
    assert store.engine.url.get_backend_name() == store_url.split(":")[0].split("+")[0]
    store.engine.dispose()
    res = CliRunner().invoke(app, ["migrate", "-w", str(tmp_path / "ws"), "--store", store_url])
    assert res.exit_code == 0, res.output
    assert f"store at revision {migrate.head()}" in res.output
