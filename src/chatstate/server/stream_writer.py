"""The records of a response's chunk log, and the buffered writer that produces them.

A :class:`ChunkWriter` takes the upstream's chunks as they come and writes them to the
log in one ``append`` per flush: the first chunk at once when a client streams (its
first token is not held back), then whatever arrived during each ``interval`` or once
``max_bytes`` of answer text is waiting, and at the end the remaining chunks together
with the terminal record. Each flush's last record carries its time (``ts``): that is the producer's
lease, renewed by the writes themselves.

Readers in the same process follow :class:`Live`, the records flushed so far, and wait
on its notification. They only see flushed records, so no client ever receives a chunk
that a crash could take back; the terminal record is held back from them until the
gateway has stored the answer (``publish_terminal``), so a client that starts its next
turn on ``[DONE]`` finds the answer in the session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from chatstate.model import Event, JSONValue, NewEvent

__all__ = [
    "TERMINALS",
    "ChunkWriter",
    "FlushFailed",
    "Live",
    "Record",
    "Status",
    "Stopped",
    "new_record",
    "record_of",
    "text_size",
]

Status = Literal["done", "error", "cancelled", "incomplete"]
TERMINALS: tuple[Status, ...] = ("done", "error", "cancelled", "incomplete")
_MAX_EVENTS = 500
"""Records per append (the store takes up to 1,000)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a chunk log: ``type`` is ``chunk`` or a terminal status."""

    seq: int
    type: str
    payload: Mapping[str, JSONValue]
    stamp: float | None = None
    """Wall-clock time of the flush this record ended (the producer's lease), if it did."""

    @property
    def terminal(self) -> bool:
        return self.type in TERMINALS


class Stopped(Exception):
    """Another writer ended this response (a cancel, or a reaper that took it for dead)."""


class FlushFailed(Exception):
    """The store refused a flush for another reason; the response ends with ``error``."""


def new_record(kind: str, payload: Mapping[str, JSONValue]) -> NewEvent:
    return NewEvent(kind="marker", data={"t": kind, "d": dict(payload)})


def record_of(event: Event) -> Record:
    kind, payload, stamp = event.data.get("t"), event.data.get("d"), event.data.get("ts")
    return Record(
        seq=event.seq,
        type=kind if isinstance(kind, str) else "unknown",
        payload=cast(Mapping[str, JSONValue], payload) if isinstance(payload, dict) else {},
        stamp=float(stamp) if isinstance(stamp, int | float) else None,
    )


@dataclass(slots=True, eq=False)
class Live:
    """The flushed records of a response produced in this process, and a wakeup."""

    records: list[Record] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    detached: bool = False
    """The writer stopped early: readers continue from the store."""

    @property
    def head(self) -> int:
        return self.records[-1].seq if self.records else 0

    @property
    def ended(self) -> bool:
        return bool(self.records) and self.records[-1].terminal

    def after(self, cursor: int) -> list[Record]:
        """The records after chunk ``cursor`` (records are numbered 1, 2, 3, ...)."""
        return self.records[cursor:] if cursor >= 0 else list(self.records)

    def publish(self, records: Sequence[Record]) -> None:
        self.records += records
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def detach(self) -> None:
        self.detached = True
        self.publish(())


AppendMany = Callable[[int, list[NewEvent]], Awaitable[list[Record]]]
"""``(expected head, events) -> their records``; raises :class:`Stopped` on a conflict."""


class ChunkWriter:
    """Buffers one response's chunks and flushes them by time or size (see the module)."""

    def __init__(
        self, append: AppendMany, *, interval: float, max_bytes: int, eager: bool = True
    ) -> None:
        self._append = append
        self.interval = interval
        self.max_bytes = max_bytes
        self.live = Live()
        self.flushes = 0
        self.last_write = time.time()
        self._pending: list[NewEvent] = []
        self._bytes = 0
        self._ready = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._terminal: NewEvent | None = None
        self._held: list[Record] = []
        self.stopped = False
        self.error: BaseException | None = None
        self._eager = eager
        self._task = asyncio.create_task(self._run(), name="chunk-writer")

    def add(self, payload: Mapping[str, JSONValue], size: int) -> None:
        """Queue one chunk (``size``: its bytes, for the size trigger)."""
        if self.stopped:
            raise Stopped
        if self.error is not None:
            raise FlushFailed(type(self.error).__name__) from self.error
        self._pending.append(new_record("chunk", payload))
        self._bytes += size
        self._ready.set()
        if self._bytes >= self.max_bytes:
            self._full.set()

    async def close(self, status: Status | None, payload: Mapping[str, JSONValue]) -> bool:
        """Flush what is queued plus the terminal ``status`` (none: just flush). True
        when the terminal is in the log; False when another writer ended it first or a
        flush failed (then the caller writes the terminal its own way)."""
        self._closing = True
        if status is not None:
            self._terminal = new_record(status, payload)
        self._ready.set()
        self._full.set()
        await self._task
        return status is not None and not self.stopped and self.error is None

    @property
    def records(self) -> list[Record]:
        """Everything written, the held-back terminal included."""
        return self.live.records + self._held

    def publish_terminal(self) -> None:
        held, self._held = self._held, []
        self.live.publish(held)

    async def _run(self) -> None:
        try:
            if not self._eager:  # nobody is waiting for the first chunk
                await self._ready.wait()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
            while True:
                await self._ready.wait()
                if self._closing:
                    break
                await self._flush()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
            if self._terminal is not None:
                self._pending.append(self._terminal)
            if self._pending:
                await self._flush(hold_terminal=self._terminal is not None)
        except Stopped:
            self.stopped = True
            self.live.detach()
        except Exception as exc:  # the store failed: the caller ends the response
            self.error = exc
            self.live.detach()

    async def _flush(self, *, hold_terminal: bool = False) -> None:
        batch, self._pending = self._pending, []
        self._bytes = 0
        self._ready.clear()
        self._full.clear()
        for start in range(0, len(batch), _MAX_EVENTS):
            part = batch[start : start + _MAX_EVENTS]
            now = time.time()
            part[-1] = replace(part[-1], data={**part[-1].data, "ts": now})
            records = await self._append(self.live.head, part)
            self.flushes += 1
            self.last_write = now
            if hold_terminal and records and records[-1].terminal:
                self._held = records[-1:]
                records = records[:-1]
            self.live.publish(records)


def text_size(chunk: Mapping[str, JSONValue]) -> int:
    """Characters of answer text (content, tool-call arguments) in one chunk: what the
    writer's size trigger counts, so 4 KB means 4 KB of answer, not of JSON envelopes."""
    size = 0
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        content = delta.get("content")
        size += len(content) if isinstance(content, str) else 0
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            args = function.get("arguments") if isinstance(function, dict) else None
            size += len(args) if isinstance(args, str) else 0
    return size
