"""The built-in backends, registered for the conformance suite (memory first, then SQLite,
PostgreSQL and Redis, each from its own module); the registry itself, :class:`BackendSpec`
and the movable clock live in :mod:`chatstate.testing.registry` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from chatstate.store.backends.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.registry import (
    REGISTRY,
    BackendSpec,
    FakeClock,
    PeerOpener,
    in_ci,
    peer_opener,
    process_url,
    register,
    share,
)

__all__ = [
    "REGISTRY",
    "BackendSpec",
    "FakeClock",
    "PeerOpener",
    "in_ci",
    "peer_opener",
    "process_url",
    "register",
    "share",
]


@asynccontextmanager
async def _open_memory(config: StoreConfig, _tmp: Path) -> AsyncIterator[Store]:
    store = MemoryStore(config)
    try:
        yield store
    finally:
        await store.close()


register(BackendSpec(name="memory", open=_open_memory))

# Each database backend keeps its spec (how to reach a test server, fresh per test) in its
# own module, which registers it on import.
from chatstate.testing import (  # noqa: E402 - registration order: memory first
    backends_postgres,  # noqa: F401
    backends_redis,  # noqa: F401
    backends_sqlite,  # noqa: F401
)
