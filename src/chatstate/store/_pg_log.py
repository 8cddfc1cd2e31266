"""The PostgreSQL backend's log: append, read, fork, and the state document.

An append locks its session row (``SELECT ... FOR UPDATE``), then reads the branch head and
the idempotency record in a second statement, which therefore sees everything the lock
waited for. Appends to one session are totally ordered; the checks run in the order of the
in-memory reference backend. A read sees one snapshot (REPEATABLE READ) and reads each
lineage segment with its own index range scan, all queued in one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from chatstate.errors import (
    AlreadyExists,
    BranchNotFound,
    IdempotencyMismatch,
    SeqConflict,
    StateVersionConflict,
)
from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Event,
    JSONValue,
    NewEvent,
    StateDoc,
)
from chatstate.store import _pg_sql as q
from chatstate.store._pg_pool import Attempt, Conn
from chatstate.store._pg_rows import PgBase, branches_of, event_of, exact, json_object, live, one
from chatstate.store.codec import decode_event, encode_appends, encode_state, fingerprint
from chatstate.store.lineage import clip_segments, lineage
from chatstate.store.protocol import Order
from chatstate.store.rules import (
    check_fork,
    check_fork_point,
    check_id,
    check_read,
    check_seq,
    expiry_after,
    from_us,
    to_us,
)

__all__ = ["LogMethods"]


class LogMethods(PgBase):
    # -- events -------------------------------------------------------------------------

    async def append(
        self,
        *,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str = DEFAULT_BRANCH,
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        check_id(branch, "branch")
        check_seq(expected_seq, "expected_seq", allow_none=True)
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key", max_len=255)
        encoded = encode_appends(events, self._config.limits)
        self._ids(tenant_id, session_id)
        now = exact(self._config.clock())
        print_ = None if idempotency_key is None else fingerprint(branch, encoded)
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> AppendResult:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                lookup = await conn.execute(
                    q.APPEND_LOOKUP,
                    {"t": tenant_id, "s": session_id, "b": branch, "key": idempotency_key},
                )
                session = live(tenant_id, session_id, await locked.fetchone(), now)
                head, *idem = one(await lookup.fetchone())
                if head is None:
                    raise BranchNotFound(f"branch {branch!r} not found")
                if idem[0] is not None and (
                    (now - from_us(idem[4])).total_seconds() < self._config.idempotency_ttl_seconds
                ):
                    if idem[0] != print_:
                        raise IdempotencyMismatch(
                            f"idempotency key {idempotency_key!r} was used with another payload"
                        )
                    cur = await conn.execute(
                        q.EVENTS_ASC, (*key, idem[1], idem[2], idem[3], idem[3] - idem[2] + 1)
                    )
                    rows = await cur.fetchall()
                    return AppendResult(
                        branch=idem[1],
                        first_seq=idem[2],
                        last_seq=idem[3],
                        events=tuple(event_of(row, idem[1]) for row in rows),
                        replayed=True,
                    )
                if expected_seq is not None and expected_seq != head:
                    raise SeqConflict(
                        f"expected seq {expected_seq}, branch {branch!r} is at {head}",
                        expected=expected_seq,
                        actual=head,
                    )
                expires = expiry_after(session.ttl_seconds, now)
                await conn.execute(
                    q.APPEND_WRITE,
                    {
                        "t": tenant_id,
                        "s": session_id,
                        "b": branch,
                        "head": head,
                        "now": to_us(now),
                        "tcs": [item.event.token_count for item in encoded],
                        "bodies": [item.body for item in encoded],
                        "key": idempotency_key,
                        "last": head + len(encoded),
                        "exp": None if expires is None else to_us(expires),
                        "fp": print_,
                        "first": head + 1,
                    },
                )
            return AppendResult(
                branch=branch,
                first_seq=head + 1,
                last_seq=head + len(encoded),
                events=tuple(
                    decode_event(
                        item.body,
                        seq=head + 1 + i,
                        branch=branch,
                        created_at=now,
                        token_count=item.event.token_count,
                        idempotency_key=idempotency_key,
                    )
                    for i, item in enumerate(encoded)
                ),
            )

        # With a key, a retry after a lost COMMIT replays instead of writing twice.
        return await self._runner.run(run, repeatable=idempotency_key is not None)

    async def read(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = DEFAULT_BRANCH,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        order: Order = "asc",
    ) -> list[Event]:
        check_read(branch, after_seq, before_seq, limit, order, self._config.limits)
        self._ids(tenant_id, session_id)
        now = self._config.clock()
        sql = q.EVENTS_DESC if order == "desc" else q.EVENTS_ASC

        async def run(conn: Conn, attempt: Attempt) -> list[Event]:
            parts: list[tuple[str, psycopg.AsyncCursor[Any]]] = []
            async with self._tx(conn, attempt, tenant_id, read=True):
                view = await conn.execute(q.VIEW, (tenant_id, session_id))
                branches = branches_of(tenant_id, session_id, await view.fetchall(), now)
                if branch not in branches:
                    raise BranchNotFound(f"branch {branch!r} not found")
                segments = lineage(branches, branch)
                for seg in clip_segments(segments, after_seq, before_seq, order):
                    head = branches[seg.branch].head_seq
                    hi = head if seg.hi is None else min(seg.hi, head)
                    if seg.lo <= hi:
                        cur = await conn.execute(
                            sql, (tenant_id, session_id, seg.branch, seg.lo, hi, limit)
                        )
                        parts.append((seg.branch, cur))
            out: list[Event] = []
            for owner, cur in parts:
                out += [event_of(row, owner) for row in await cur.fetchmany(limit - len(out))]
                if len(out) >= limit:
                    break
            return out

        return await self._runner.run(run)

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        events = await self.read(
            tenant_id=tenant_id, session_id=session_id, branch=branch, limit=n, order="desc"
        )
        events.reverse()
        return events

    # -- branches -----------------------------------------------------------------------

    async def fork(
        self,
        *,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str = DEFAULT_BRANCH,
        at_seq: int | None = None,
    ) -> Branch:
        check_fork(new_branch, from_branch, at_seq)
        self._ids(tenant_id, session_id)
        now = exact(self._config.clock())

        async def run(conn: Conn, attempt: Attempt) -> Branch:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                cur = await conn.execute(q.BRANCHES, (tenant_id, session_id))
                live(tenant_id, session_id, await locked.fetchone(), now)
                heads = {name: (head, order) for name, head, order in await cur.fetchall()}
                if from_branch not in heads:
                    raise BranchNotFound(f"branch {from_branch!r} not found")
                if new_branch in heads:
                    raise AlreadyExists(f"branch {new_branch!r} already exists")
                parent_head = heads[from_branch][0]
                at = parent_head if at_seq is None else at_seq
                check_fork_point(at, parent_head)
                ordinal = max(order for _, order in heads.values()) + 1
                await conn.execute(
                    q.CREATE_BRANCH,
                    (tenant_id, session_id, new_branch, ordinal, from_branch, at, at, to_us(now)),
                )
            return Branch(
                name=new_branch, head_seq=at, created_at=now, parent=from_branch, fork_seq=at
            )

        return await self._runner.run(run, repeatable=False)

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        self._ids(tenant_id, session_id)
        now = self._config.clock()

        async def run(conn: Conn, attempt: Attempt) -> list[Branch]:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.VIEW, (tenant_id, session_id))
            return list(branches_of(tenant_id, session_id, await cur.fetchall(), now).values())

        return await self._runner.run(run)

    # -- state --------------------------------------------------------------------------

    async def get_state(self, *, tenant_id: str, session_id: str) -> StateDoc:
        self._ids(tenant_id, session_id)
        now = self._config.clock()

        async def run(conn: Conn, attempt: Attempt) -> StateDoc:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.GET_STATE, (tenant_id, session_id))
            row = await cur.fetchone()
            live(tenant_id, session_id, row, now)
            version, body, updated = one(row)[7:10]
            if version is None:
                return StateDoc(version=0, data={})
            return StateDoc(version=version, data=json_object(body), updated_at=from_us(updated))

        return await self._runner.run(run)

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
    ) -> StateDoc:
        check_seq(expected_version, "expected_version")
        body = encode_state(data, self._config.limits)
        self._ids(tenant_id, session_id)
        now = exact(self._config.clock())
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> None:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                cur = await conn.execute(q.STATE_VERSION, key)
                live(tenant_id, session_id, await locked.fetchone(), now)
                row = await cur.fetchone()
                version = 0 if row is None else int(row[0])
                if version != expected_version:
                    raise StateVersionConflict(
                        f"state is at version {version}, not {expected_version}",
                        expected=expected_version,
                        actual=version,
                    )
                await conn.execute(q.PUT_STATE, (*key, expected_version + 1, body, to_us(now)))

        await self._runner.run(run, repeatable=False)
        return StateDoc(version=expected_version + 1, data=json_object(body), updated_at=now)
