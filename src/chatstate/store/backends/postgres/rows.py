"""The PostgreSQL backend's base class and the functions that turn rows into values."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from chatstate.errors import ChatstateError, SessionNotFound
from chatstate.model import Branch, Event, JSONValue, Session
from chatstate.store.backends.postgres.pool import Attempt, Conn, Runner, transaction
from chatstate.store.codec import decode_event, loads
from chatstate.store.front import StoreFront, exact
from chatstate.store.rules import StoreConfig, ensure_live, from_us

__all__ = ["PgBase", "branches_of", "event_of", "exact", "json_object", "live", "one", "session_of"]


class PgBase(StoreFront):
    """What every part of :class:`~chatstate.store.backends.postgres.store.PostgresStore` shares."""

    def __init__(
        self, runner: Runner, config: StoreConfig, *, row_level_security: bool = False
    ) -> None:
        super().__init__(config)
        self._runner = runner
        self._rls = row_level_security

    def _tx(
        self, conn: Conn, attempt: Attempt, tenant_id: str | None, *, read: bool = False
    ) -> AbstractAsyncContextManager[None]:
        return transaction(conn, attempt, tenant_id=tenant_id, rls=self._rls, read_only=read)


def one(row: Sequence[Any] | None) -> Sequence[Any]:
    if row is None:
        raise ChatstateError("PostgreSQL returned no row where one was expected")
    return row


def json_object(text: str) -> dict[str, JSONValue]:
    value = loads(text)
    if not isinstance(value, dict):
        raise ChatstateError("stored JSON is not an object")
    return value


def session_of(tenant_id: str, row: Sequence[Any]) -> Session:
    sid, user_id, meta, ttl, created, updated, expires = row[:7]
    return Session(
        tenant_id=tenant_id,
        id=sid,
        created_at=from_us(created),
        updated_at=from_us(updated),
        metadata=json_object(meta),
        user_id=user_id,
        ttl_seconds=ttl,
        expires_at=None if expires is None else from_us(expires),
    )


def live(tenant_id: str, session_id: str, row: Sequence[Any] | None, now: datetime) -> Session:
    """The session in ``row``, or ``SessionNotFound``/``SessionExpired``."""
    if row is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    return ensure_live(session_of(tenant_id, row), now)


def branches_of(
    tenant_id: str, session_id: str, rows: Sequence[Sequence[Any]], now: datetime
) -> dict[str, Branch]:
    """The branches of a ``VIEW`` result, main first, after checking the session."""
    live(tenant_id, session_id, rows[0] if rows else None, now)
    return {
        row[7]: Branch(
            name=row[7],
            head_seq=row[8],
            created_at=from_us(row[11]),
            parent=row[9],
            fork_seq=row[10],
        )
        for row in rows
        if row[7] is not None
    }


def event_of(row: Sequence[Any], branch: str) -> Event:
    seq, created, token_count, key, body = row
    return decode_event(
        body,
        seq=seq,
        branch=branch,
        created_at=from_us(created),
        token_count=token_count,
        idempotency_key=key,
    )
