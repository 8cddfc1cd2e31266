"""Durable, resumable response streams: a chunk log per response, kept in the store.

Each response of the gateway gets a hidden session in the reserved tenant
``chatstate.responses`` whose id is the response id. Its metadata names the owning tenant,
session and branch (every read checks the tenant: another tenant's id is a 404); its log
holds one ``marker`` event per streamed chunk, so chunk numbers are the store's dense
sequence numbers, and ends with exactly one terminal record (``done``, ``error``,
``cancelled`` or ``incomplete``). Every write names the head it expects, so a terminal
written by a canceller or a reaper stops the producer at its next chunk, and two
terminals can never both land. The session's TTL is the response retention: afterwards
the store answers ``SessionExpired`` and we answer 410.

The producer renews a lease (the hidden session's state document, ``lease_until``)
every third of ``lease_seconds``. A reader tailing a log whose producer is not in this
process and whose lease has run out writes ``incomplete`` itself: that is how a stream
whose process died still ends, on whichever process the client reconnects to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from chatstate.errors import NotFound, SeqConflict, SessionExpired, ValidationError
from chatstate.model import Event, JSONValue, NewEvent
from chatstate.server.auth import RESPONSES_TENANT
from chatstate.server.errors import ResponseExpired, ResponseNotFound
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id

__all__ = ["TERMINALS", "Record", "ResponseInfo", "ResponseLog", "Status", "Stopped"]

Status = Literal["done", "error", "cancelled", "incomplete"]
TERMINALS: tuple[Status, ...] = ("done", "error", "cancelled", "incomplete")
_PAGE = 500


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    id: str
    tenant: str
    session_id: str
    branch: str
    model: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a chunk log: ``type`` is ``chunk`` or a terminal status."""

    seq: int
    type: str
    payload: Mapping[str, JSONValue]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINALS


class Stopped(Exception):
    """Another writer ended this response (a cancel, or a reaper that took it for dead)."""


def _record(event: Event) -> Record:
    kind, payload = event.data.get("t"), event.data.get("d")
    return Record(
        seq=event.seq,
        type=kind if isinstance(kind, str) else "unknown",
        payload=cast(Mapping[str, JSONValue], payload) if isinstance(payload, dict) else {},
    )


class ResponseLog:
    def __init__(
        self, store: Store, *, ttl_seconds: float, lease_seconds: float, poll_seconds: float = 0.1
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.local: set[str] = set()
        """Responses whose producer runs in this process (their lease is not checked)."""
        self._wakeups: dict[str, asyncio.Event] = {}
        self.on_reaped: Callable[[str], Awaitable[None]] | None = None
        """Called after this process wrote ``incomplete`` for a dead producer."""

    # -- writing ------------------------------------------------------------------------

    async def create(
        self, *, response_id: str, tenant: str, session_id: str, branch: str, model: str
    ) -> ResponseInfo:
        """A new, empty log with a fresh lease. Raises ``AlreadyExists`` for a known id."""
        session = await self.store.create_session(
            tenant_id=RESPONSES_TENANT,
            session_id=response_id,
            metadata={
                "tenant": tenant,
                "session": session_id,
                "branch": branch,
                "model": model[:200],
                "owner": f"{tenant}/{session_id}",
            },
            ttl_seconds=self.ttl_seconds,
        )
        await self.store.put_state(
            tenant_id=RESPONSES_TENANT,
            session_id=response_id,
            data={"lease_until": time.time() + self.lease_seconds},
            expected_version=0,
        )
        return ResponseInfo(response_id, tenant, session_id, branch, model, session.created_at)

    async def append(
        self, response_id: str, *, expected: int, kind: str, payload: Mapping[str, JSONValue]
    ) -> int:
        """Write record ``expected + 1``; :class:`Stopped` when someone else wrote it."""
        try:
            result = await self.store.append(
                tenant_id=RESPONSES_TENANT,
                session_id=response_id,
                events=[NewEvent(kind="marker", data={"t": kind, "d": dict(payload)})],
                expected_seq=expected,
            )
        except SeqConflict as exc:
            raise Stopped(response_id) from exc
        finally:
            self._wake(response_id)
        return result.last_seq

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
        return ResponseInfo(
            id=response_id,
            tenant=str(meta.get("tenant")),
            session_id=str(meta.get("session")),
            branch=str(meta.get("branch", "main")),
            model=str(meta.get("model", "")),
            created_at=session.created_at,
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

    async def lease_expired(self, response_id: str) -> bool:
        doc = await self.store.get_state(tenant_id=RESPONSES_TENANT, session_id=response_id)
        until = doc.data.get("lease_until")
        return not isinstance(until, int | float) or until < time.time()

    async def check_cursor(self, response_id: str, after: int) -> bool:
        """Refuse a cursor past the head (422); False when the stream ended at or before it."""
        head = await self.head(response_id)
        head_seq = head.seq if head is not None else 0
        if after < 0 or after > head_seq:
            raise ValidationError(f"cursor {after} is beyond the response's head {head_seq}")
        return not (head is not None and head.terminal and head.seq <= after)

    async def tail(self, response_id: str, *, after: int = 0) -> AsyncIterator[Record]:
        """Records after ``after``, then the live tail, ending with the terminal record."""
        if not await self.check_cursor(response_id, after):
            return
        try:
            async for record in self._follow(response_id, after):
                yield record
        finally:
            self._wakeups.pop(response_id, None)

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
        """Delete the response logs of one session (or, with ``None``, of ``tenant``)."""
        flt: dict[str, str | int | float | bool] = (
            {"tenant": tenant} if session_id is None else {"owner": f"{tenant}/{session_id}"}
        )
        deleted = 0
        while True:
            page = await self.store.list_sessions(
                tenant_id=RESPONSES_TENANT, metadata=flt, limit=200
            )
            if not page.items:
                return deleted
            for item in page.items:
                try:
                    await self.store.delete_session(tenant_id=RESPONSES_TENANT, session_id=item.id)
                    deleted += 1
                except NotFound:
                    pass
