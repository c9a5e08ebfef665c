"""Alembic env: always run with a connection handed over by ``lookalike.store.migrate`` (never from an ini file).

Running inside the package keeps migrations working from an installed wheel, where no alembic.ini exists.
"""
from __future__ import annotations

from alembic import context

from lookalike.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
