"""A store wrapper that counts calls: how the store-call budget of a turn is checked.

``CountingStore(store)`` forwards every call to ``store`` and records the method and the
name of the asyncio task that made it. Background work names its tasks (the context
engine's compactions ``compact-...`` and background indexing ``index-...``, the gateway's
after-turn work ``after-turn-...``),
so a turn's calls split into its request path and the work it leaves behind. Give it to
code that wants a :class:`~chatstate.store.protocol.Store` with ``counting.store``.

"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

from chatstate.store.protocol import Store

__all__ = ["BACKGROUND_TASKS", "CountingStore"]

BACKGROUND_TASKS = ("compact-", "after-turn-", "index-")
"""Prefixes of the task names whose store calls are background work."""


class CountingStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        """(method, task name), in the order made."""
        self.events_read: list[tuple[int, str]] = []
        """(events returned, task name) of each read."""

    @property
    def store(self) -> Store:
        """This wrapper, typed as the store it wraps."""
        return cast(Store, self)

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        call = cast(Callable[..., Awaitable[object]], attr)

        @functools.wraps(call)
        async def counted(*args: object, **kwargs: object) -> object:
            task = asyncio.current_task()
            who = task.get_name() if task is not None else ""
            self.calls.append((name, who))
            result = await call(*args, **kwargs)
            if name in ("read", "read_last"):
                self.events_read.append((len(cast(list[object], result)), who))
            elif name == "read_ranges":
                pages = cast(list[list[object]], result)
                self.events_read.append((sum(len(page) for page in pages), who))
            return result

        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.events_read.clear()

    def events_on_request_path(self) -> int:
        """Events returned by reads made outside background tasks."""
        return sum(n for n, task in self.events_read if not task.startswith(BACKGROUND_TASKS))

    def request_path(self) -> Counter[str]:
        """Calls made outside background tasks, by method."""
        return Counter(m for m, task in self.calls if not task.startswith(BACKGROUND_TASKS))

    def background(self) -> Counter[str]:
        """Calls made by background tasks, by method."""
        return Counter(m for m, task in self.calls if task.startswith(BACKGROUND_TASKS))
