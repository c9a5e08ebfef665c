"""Alembic environment and revisions of the store schema (run by ``lookalike.store.migrate``)."""
