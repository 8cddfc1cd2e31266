"""Compatibility path: the PostgreSQL backend lives in
:mod:`chatstate.store.backends.postgres` (needs ``pip install 'chatstate[postgres]'``)."""

from chatstate.store.backends.postgres.store import PostgresStore, migrate, open_postgres_url

__all__ = ["PostgresStore", "migrate", "open_postgres_url"]
