"""Compatibility path: the SQLite backend lives in :mod:`chatstate.store.backends.sqlite`."""

from chatstate.store.backends.sqlite.store import SQLiteStore, Synchronous, open_sqlite_url

__all__ = ["SQLiteStore", "Synchronous", "open_sqlite_url"]
