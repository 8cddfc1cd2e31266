"""A store wrapper that counts calls: how the store-call budget of a turn is checked.

``CountingStore(store)`` forwards every call to ``store`` and records the method and the
name of the asyncio task that made it. Background work names its tasks (the context
engine's compactions ``compact-...``, the gateway's after-turn work ``after-turn-...``),
so a turn's calls split into its request path and the work it leaves behind. Give it to
code that wants a :class:`~chatstate.store.protocol.Store` with ``counting.store``.

``ranges_shim=True`` gives a store without the ``read_ranges`` primitive (see
:mod:`chatstate.context.ranges`) a stand-in, counted as one call as the primitive will
be, made of the inner store's reads (not counted): it shows what a turn costs once the
store front has the primitive. Without it the engine falls back to one read per range.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

from chatstate.context.ranges import read_ranges
from chatstate.model import Event
from chatstate.store.protocol import Store

__all__ = ["BACKGROUND_TASKS", "CountingStore"]

BACKGROUND_TASKS = ("compact-", "after-turn-")
"""Prefixes of the task names whose store calls are background work."""


class CountingStore:
    def __init__(self, inner: Store, *, ranges_shim: bool = False) -> None:
        self.inner = inner
        self.ranges_shim = ranges_shim and not hasattr(inner, "read_ranges")
        self.calls: list[tuple[str, str]] = []
        """(method, task name), in the order made."""

    @property
    def store(self) -> Store:
        """This wrapper, typed as the store it wraps."""
        return cast(Store, self)

    def __getattr__(self, name: str) -> object:
        if name == "read_ranges" and self.ranges_shim:
            return self._read_ranges
        attr = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        call = cast(Callable[..., Awaitable[object]], attr)

        @functools.wraps(call)
        async def counted(*args: object, **kwargs: object) -> object:
            task = asyncio.current_task()
            self.calls.append((name, task.get_name() if task is not None else ""))
            return await call(*args, **kwargs)

        return counted

    async def _read_ranges(
        self, *, tenant_id: str, session_id: str, branch: str, ranges: list[tuple[int, int]]
    ) -> list[list[Event]]:
        task = asyncio.current_task()
        self.calls.append(("read_ranges", task.get_name() if task is not None else ""))
        return await read_ranges(self.inner, (tenant_id, session_id, branch), ranges)

    def reset(self) -> None:
        self.calls.clear()

    def request_path(self) -> Counter[str]:
        """Calls made outside background tasks, by method."""
        return Counter(m for m, task in self.calls if not task.startswith(BACKGROUND_TASKS))

    def background(self) -> Counter[str]:
        """Calls made by background tasks, by method."""
        return Counter(m for m, task in self.calls if task.startswith(BACKGROUND_TASKS))
