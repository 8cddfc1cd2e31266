"""Durable, resumable response streams: a chunk log per response, kept in the store.

Each response of the gateway gets a hidden session in the reserved tenant
``chatstate.responses`` whose id is the response id. Its metadata names the owning tenant,
session and branch (every read checks the tenant: another tenant's id is a 404); its log
holds one ``marker`` event per streamed chunk, so chunk numbers are the store's dense
sequence numbers, and ends with exactly one terminal record (``done``, ``error``,
``cancelled`` or ``incomplete``). Every write names the head it expects, so a terminal
written by a canceller or a reaper stops the producer at its next flush, and two
terminals can never both land. The session's TTL is the response retention: afterwards
the store answers ``SessionExpired`` and we answer 410.

**Buffered writes.** The producer does not write each chunk: a :class:`ChunkWriter`
(:mod:`chatstate.server.stream_writer`) flushes them to the log in one ``append`` per
flush interval (``stream_flush_seconds``, 0.1 s) or buffer size (``stream_flush_bytes``,
4 KB), the first chunk at once, the terminal record together with the last chunks.
Readers only ever see flushed records, so what a client received is always in the
log: a process that dies loses at most the chunks of one flush interval that no client
has seen; whoever reaps it writes ``incomplete`` after the last flushed chunk, and the
stored answer is the flushed text. Readers in the producer's process take the flushed
records from memory and wait on a notification (no store call per chunk); readers
elsewhere poll the log every ``poll_seconds``.

**The lease** needs no write of its own: the last record of every flush carries its
time (``ts``), the log's metadata its start (``started``), and only a producer whose
upstream stays silent for a third of ``lease_seconds`` writes ``lease_until`` to the
hidden session's state document. A reader tailing a log whose producer is not in this
process and whose newest of those three times is older than ``lease_seconds`` writes
``incomplete`` itself: that is how a stream whose process died still ends, on whichever
process the client reconnects to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from chatstate.errors import NotFound, SeqConflict, SessionExpired, ValidationError
from chatstate.model import JSONValue, NewEvent
from chatstate.server.auth import RESPONSES_TENANT
from chatstate.server.errors import ResponseExpired, ResponseNotFound
from chatstate.server.stream_writer import (
    TERMINALS,
    ChunkWriter,
    Live,
    Record,
    Status,
    Stopped,
    new_record,
    record_of,
)
from chatstate.store.erase import erase_responses
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id

__all__ = [
    "TERMINALS",
    "ChunkWriter",
    "Record",
    "ResponseInfo",
    "ResponseLog",
    "Status",
    "Stopped",
]

_PAGE = 500
_record = record_of


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    id: str
    tenant: str
    session_id: str
    branch: str
    model: str
    created_at: datetime
    started: float = 0.0
    """Wall-clock time the log was created (the lease before the first flush)."""


class ResponseLog:
    def __init__(
        self,
        store: Store,
        *,
        ttl_seconds: float,
        lease_seconds: float,
        poll_seconds: float = 0.1,
        flush_seconds: float = 0.1,
        flush_bytes: int = 4096,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self.local: set[str] = set()
        """Responses whose producer runs in this process (their lease is not checked)."""
        self._live: dict[str, Live] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self.on_reaped: Callable[[str], Awaitable[None]] | None = None
        """Called after this process wrote ``incomplete`` for a dead producer."""

    # -- writing ------------------------------------------------------------------------

    async def create(
        self, *, response_id: str, tenant: str, session_id: str, branch: str, model: str
    ) -> ResponseInfo:
        """A new, empty log; its start time is its lease until the first flush. Raises
        ``AlreadyExists`` for a known id."""
        started = time.time()
        session = await self.store.create_session(
            tenant_id=RESPONSES_TENANT,
            session_id=response_id,
            metadata={
                "tenant": tenant,
                "session": session_id,
                "branch": branch,
                "model": model[:200],
                "owner": f"{tenant}/{session_id}",
                "started": started,
            },
            ttl_seconds=self.ttl_seconds,
        )
        return ResponseInfo(
            response_id, tenant, session_id, branch, model, session.created_at, started
        )

    def writer(self, response_id: str, *, eager: bool = True) -> ChunkWriter:
        """The buffered writer of a log this process produces; its flushed records are
        served to this process's readers from memory until :meth:`release`. ``eager``:
        flush the first chunk at once (a client is streaming)."""

        async def append(expected: int, events: list[NewEvent]) -> list[Record]:
            return await self.append_many(response_id, expected=expected, events=events)

        writer = ChunkWriter(
            append, interval=self.flush_seconds, max_bytes=self.flush_bytes, eager=eager
        )
        self._live[response_id] = writer.live
        return writer

    def release(self, response_id: str) -> None:
        """Readers that start from now on read the log from the store."""
        self._live.pop(response_id, None)

    async def append(
        self, response_id: str, *, expected: int, kind: str, payload: Mapping[str, JSONValue]
    ) -> int:
        """Write record ``expected + 1``; :class:`Stopped` when someone else wrote it."""
        records = await self.append_many(
            response_id, expected=expected, events=[new_record(kind, payload)]
        )
        return records[-1].seq

    async def append_many(
        self, response_id: str, *, expected: int, events: list[NewEvent]
    ) -> list[Record]:
        """Write records ``expected + 1 ...`` in one call; :class:`Stopped` on a conflict."""
        try:
            result = await self.store.append(
                tenant_id=RESPONSES_TENANT,
                session_id=response_id,
                events=events,
                expected_seq=expected,
            )
        except SeqConflict as exc:
            raise Stopped(response_id) from exc
        finally:
            self._wake(response_id)
        return [record_of(e) for e in result.events]

    async def finish_once(
        self, response_id: str, status: Status, payload: Mapping[str, JSONValue]
    ) -> bool:
        """Write ``status`` at the head unless a terminal is there already. True if written."""
        while True:
            last = await self.store.read_last(
                tenant_id=RESPONSES_TENANT, session_id=response_id, n=1
            )
            head = last[0].seq if last else 0
            if last and _record(last[0]).terminal:
                return False
            try:
                await self.append(response_id, expected=head, kind=status, payload=payload)
            except Stopped:
                continue
            return True

    async def renew(self, response_id: str, version: int) -> int:
        """The idle producer's lease (its upstream is silent): ``lease_until`` in the
        hidden session's state document. Returns the document's new version."""
        doc = await self.store.put_state(
            tenant_id=RESPONSES_TENANT,
            session_id=response_id,
            data={"lease_until": time.time() + self.lease_seconds},
            expected_version=version,
        )
        return doc.version

    # -- reading ------------------------------------------------------------------------

    async def info(self, tenant: str, response_id: str) -> ResponseInfo:
        """The response, if it belongs to ``tenant``: 404 otherwise, 410 once expired."""
        info = await self.load(response_id)
        if info.tenant != tenant:
            raise ResponseNotFound(f"response {response_id!r} not found")
        return info

    async def load(self, response_id: str) -> ResponseInfo:
        """The response whoever owns it: for the service's own use, never a caller's."""
        try:
            check_id(response_id, "response id")
            session = await self.store.get_session(
                tenant_id=RESPONSES_TENANT, session_id=response_id
            )
        except SessionExpired as exc:
            raise ResponseExpired(f"response {response_id!r} has expired") from exc
        except (NotFound, ValidationError) as exc:
            raise ResponseNotFound(f"response {response_id!r} not found") from exc
        meta = session.metadata
        started = meta.get("started")
        return ResponseInfo(
            id=response_id,
            tenant=str(meta.get("tenant")),
            session_id=str(meta.get("session")),
            branch=str(meta.get("branch", "main")),
            model=str(meta.get("model", "")),
            created_at=session.created_at,
            started=float(started) if isinstance(started, int | float) else 0.0,
        )

    async def read(self, response_id: str, *, after: int = 0, limit: int = _PAGE) -> list[Record]:
        try:
            events = await self.store.read(
                tenant_id=RESPONSES_TENANT, session_id=response_id, after_seq=after, limit=limit
            )
        except SessionExpired as exc:
            raise ResponseExpired(f"response {response_id!r} has expired") from exc
        return [_record(e) for e in events]

    async def read_all(self, response_id: str) -> list[Record]:
        out: list[Record] = []
        while page := await self.read(response_id, after=out[-1].seq if out else 0):
            out += page
        return out

    async def head(self, response_id: str) -> Record | None:
        last = await self.store.read_last(tenant_id=RESPONSES_TENANT, session_id=response_id, n=1)
        return _record(last[0]) if last else None

    async def lease_expired(self, response_id: str, info: ResponseInfo | None = None) -> bool:
        """True when the newest sign of life of the producer is over ``lease_seconds``
        old: the last flush's ``ts``, the log's start, an idle producer's
        ``lease_until`` (in that order, reading only as far as needed)."""
        now = time.time()
        head = await self.head(response_id)
        if head is not None and head.stamp is not None:
            if head.stamp + self.lease_seconds >= now:
                return False
        elif head is None:
            info = info or await self.load(response_id)
            if info.started + self.lease_seconds >= now:
                return False
        doc = await self.store.get_state(tenant_id=RESPONSES_TENANT, session_id=response_id)
        until = doc.data.get("lease_until")
        return not isinstance(until, int | float) or until < now

    async def check_cursor(self, response_id: str, after: int) -> bool:
        """Refuse a cursor past the head (422); False when the stream ended at or before it."""
        live = self._live.get(response_id)
        if live is not None and not live.detached:
            head_seq, ended = live.head, live.ended
        else:
            head = await self.head(response_id)
            head_seq = head.seq if head is not None else 0
            ended = head is not None and head.terminal
        if after < 0 or after > head_seq:
            raise ValidationError(f"cursor {after} is beyond the response's head {head_seq}")
        return not (ended and head_seq <= after)

    async def tail(
        self, response_id: str, *, after: int = 0, checked: bool = False
    ) -> AsyncIterator[Record]:
        """Records after ``after``, then the live tail, ending with the terminal record
        (``checked``: the caller has run :meth:`check_cursor` already)."""
        if not checked and not await self.check_cursor(response_id, after):
            return
        cursor = after
        live = self._live.get(response_id)
        if live is not None:
            async for record in self._follow_live(response_id, live, after):
                yield record
                cursor = record.seq
                if record.terminal:
                    return
        try:
            async for record in self._follow(response_id, cursor):
                yield record
        finally:
            self._wakeups.pop(response_id, None)

    async def _follow_live(self, response_id: str, live: Live, after: int) -> AsyncIterator[Record]:
        """The flushed records from memory, waiting on the writer's notification; ends
        (for the store to take over) when the writer stops early or goes away."""
        cursor = after
        while True:
            changed = live.changed
            for record in live.after(cursor):
                yield record
                cursor = record.seq
                if record.terminal:
                    return
            if live.detached:
                return
            try:
                await asyncio.wait_for(changed.wait(), self.lease_seconds)
            except TimeoutError:
                if self._live.get(response_id) is not live:
                    return

    async def _follow(self, response_id: str, after: int) -> AsyncIterator[Record]:
        cursor = after
        checked = time.monotonic()
        while True:
            wakeup = self._wakeups.setdefault(response_id, asyncio.Event())
            records = await self.read(response_id, after=cursor)
            for record in records:
                yield record
                cursor = record.seq
                if record.terminal:
                    return
            if records:
                checked = time.monotonic()
                continue
            if (
                response_id not in self.local
                and time.monotonic() - checked >= self.lease_seconds / 3
            ):
                checked = time.monotonic()
                if await self.lease_expired(response_id):
                    message = "the process producing this response stopped"
                    reaped = await self.finish_once(response_id, "incomplete", {"message": message})
                    if reaped and self.on_reaped is not None:
                        await self.on_reaped(response_id)
                    continue
            with suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), self.poll_seconds)

    def _wake(self, response_id: str) -> None:
        event = self._wakeups.pop(response_id, None)
        if event is not None:
            event.set()

    # -- erasure ------------------------------------------------------------------------

    async def delete_for(self, tenant: str, session_id: str | None = None) -> int:
        """Delete the response logs of one session (or, with ``None``, of ``tenant``),
        expired ones included; :func:`chatstate.store.erase.erase` calls this first."""
        return await erase_responses(self.store, tenant, session_id)
