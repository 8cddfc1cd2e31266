"""Conformance registration of the SQLite backend: a new database file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from chatstate.store.backends.sqlite.store import SQLiteStore
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.registry import BackendSpec, register, share


@asynccontextmanager
async def _open_path(path: Path, config: StoreConfig) -> AsyncIterator[Store]:
    store = await SQLiteStore.open(path, config=config)
    try:
        yield share(store, lambda: _open_path(path, config), url=f"sqlite:///{path}")
    finally:
        await store.close()


def _open(config: StoreConfig, tmp: Path) -> AbstractAsyncContextManager[Store]:
    return _open_path(tmp.resolve() / "chatstate.db", config)


register(BackendSpec(name="sqlite", open=_open))
