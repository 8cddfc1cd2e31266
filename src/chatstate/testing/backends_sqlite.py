"""Conformance registration of the SQLite backend: a new database file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.store.sqlite import SQLiteStore
from chatstate.testing.backends import BackendSpec, register


@asynccontextmanager
async def _open(config: StoreConfig, tmp: Path) -> AsyncIterator[Store]:
    store = await SQLiteStore.open(tmp / "chatstate.db", config=config)
    try:
        yield store
    finally:
        await store.close()


register(BackendSpec(name="sqlite", open=_open))
