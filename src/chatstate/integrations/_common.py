"""What the adapters share: the import guard, session creation, and a loop for sync calls."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from types import ModuleType
from typing import TypeVar

from chatstate import AlreadyExists, NewEvent, Store, open_store
from chatstate.model import JSONValue

__all__ = ["LoopThread", "append_all", "ensure_session", "require"]

T = TypeVar("T")
MAX_PER_APPEND = 500
"""Events per append: below the store's limit (1,000), so a long batch is split."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"chatstate.integrations.{extra} needs {module!r}: pip install 'chatstate[{extra}]'"
        ) from exc


async def ensure_session(
    store: Store,
    *,
    tenant_id: str,
    session_id: str,
    metadata: Mapping[str, JSONValue] | None = None,
) -> None:
    """Create the session unless it exists."""
    with contextlib.suppress(AlreadyExists):
        await store.create_session(
            tenant_id=tenant_id, session_id=session_id, metadata=dict(metadata or {})
        )


async def append_all(
    store: Store, *, tenant_id: str, session_id: str, events: Sequence[NewEvent], branch: str
) -> int:
    """Append ``events`` in batches the store accepts; the last seq written."""
    last = 0
    for start in range(0, len(events), MAX_PER_APPEND):
        result = await store.append(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=branch,
            events=list(events[start : start + MAX_PER_APPEND]),
        )
        last = result.last_seq
    return last


class LoopThread:
    """A private event loop in a daemon thread, for the adapters' synchronous methods.

    A store belongs to the loop it was opened on; a synchronous caller (LangChain's
    ``invoke``, LangGraph's ``put``) hands its coroutines to this loop and waits.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chatstate-adapter", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[object, object, T]) -> T:
        """Run ``coro`` on the private loop and wait for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous adapter call from inside its own loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    async def run_async(self, coro: Coroutine[object, object, T]) -> T:
        """Await ``coro`` on the private loop from any other loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def open(self, url: str) -> Store:
        """Open the store at ``url`` on the private loop."""
        return self.run(open_store(url))

    def close(self, store: Store | None = None) -> None:
        if store is not None:
            self.run(store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
