"""Schema migrations of the store with Alembic, run from Python so an installed package needs no alembic.ini.

``upgrade(engine)`` brings any database to the newest revision: an empty one gets every table, and a database
made before migrations existed (``create_all``, no ``alembic_version`` table) is stamped with the first
revision and upgraded from there. ``Store`` calls it at start-up; ``lookalike migrate`` calls it by hand.
"""
from __future__ import annotations

import logging
import os
from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
# alembic logs its plugin set-up and context at INFO on every start-up of every command; our own line says
# when a migration actually runs
logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPTS = "lookalike.store:migrations"
FIRST = "0001"  # the schema as it stood before migrations: what a legacy create_all database holds
# any constant: serialises concurrent start-ups of several replicas on one PostgreSQL
PG_LOCK_KEY = 0x6C6F6F6B


def default_store_url() -> str | None:
    """``LOOKALIKE_STORE_URL`` when set: every command's store, unless ``--store`` names another."""
    return os.environ.get("LOOKALIKE_STORE_URL") or None


def engine_url(url: str) -> str:
    """SQLAlchemy URL with a driver that is installed: plain ``postgresql://`` means psycopg2 to SQLAlchemy,
    but psycopg (3) is what ``pip install lookalike[postgres]`` brings."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg2  # noqa: F401
            except ModuleNotFoundError:
                return "postgresql+psycopg://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPTS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def head() -> str:
    """The newest revision shipped with this package."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None, "no migration revisions found"
    return rev


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate ``engine``'s database to ``revision``; returns the revision it is at afterwards."""
    target = head() if revision == "head" else revision
    with engine.connect() as c:
        if current(c) == target:  # the common case, without locks or loading the revision scripts
            return target
    try:
        return _upgrade(engine, revision, target)
    except Exception:
        # SQLite has no advisory lock: two processes opening one new store can race, and the loser's
        # CREATE TABLE fails. Fine if the winner got the schema where it had to be.
        with engine.connect() as c:
            if current(c) == target:
                log.info("store %s was migrated by another process meanwhile", engine.url.render_as_string())
                return target
        raise


def _upgrade(engine: Engine, revision: str, target: str) -> str | None:
    with engine.begin() as c:
        if c.dialect.name == "postgresql":
            # a second replica starting at the same moment waits here, then finds the work done
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        before = current(c)
        if before is None and inspect(c).has_table("products"):
            log.info("store %s predates migrations: stamping revision %s", engine.url.render_as_string(), FIRST)
            command.stamp(_config(c), FIRST)
            before = FIRST
        if before != target:
            log.info("migrating store %s from %s to %s", engine.url.render_as_string(), before, target)
            command.upgrade(_config(c), revision)
        return current(c)


def downgrade(engine: Engine, revision: str) -> str | None:
    with engine.begin() as c:
        command.downgrade(_config(c), revision)
        return current(c)
