"""The PostgreSQL backend's log: append, read, fork, and the state document.

An append locks its session row (``SELECT ... FOR UPDATE``), then reads the branch head and
the idempotency record in a second statement, which therefore sees everything the lock
waited for. Appends to one session are totally ordered; the checks run in the order of the
in-memory reference backend. A read sees one snapshot (REPEATABLE READ) and reads each
lineage segment with its own index range scan, all queued in one round trip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from chatstate.errors import AlreadyExists, BranchNotFound
from chatstate.model import Branch, Event, SeqRange, StateDoc
from chatstate.store.backends.postgres import sql as q
from chatstate.store.backends.postgres.pool import Attempt, Conn
from chatstate.store.backends.postgres.rows import (
    PgBase,
    branches_of,
    event_of,
    json_object,
    live,
    one,
)
from chatstate.store.front import Appended, AppendPlan, IdemRecord, fork_point, state_conflict
from chatstate.store.lineage import plan_range
from chatstate.store.rules import from_us, to_us

__all__ = ["LogMethods"]


class LogMethods(PgBase):
    # -- events -------------------------------------------------------------------------

    async def _p_append(self, plan: AppendPlan) -> Appended:
        tenant_id, session_id, branch = plan.tenant_id, plan.session_id, plan.branch
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> Appended:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                lookup = await conn.execute(
                    q.APPEND_LOOKUP, {"t": tenant_id, "s": session_id, "b": branch, "key": plan.key}
                )
                session = live(tenant_id, session_id, await locked.fetchone(), plan.now)
                head, *idem = one(await lookup.fetchone())
                replay = plan.admit(head, None if idem[0] is None else IdemRecord(*idem))
                if replay is not None:
                    first, last = replay.first_seq, replay.last_seq
                    cur = await conn.execute(
                        q.EVENTS_ASC, (*key, replay.branch, first, last, last - first + 1)
                    )
                    rows = await cur.fetchall()
                    events = tuple(event_of(row, replay.branch) for row in rows)
                    return Appended(first, replay, events)
                expires = plan.expires_after(session.ttl_seconds)
                await conn.execute(
                    q.APPEND_WRITE,
                    {
                        "t": tenant_id,
                        "s": session_id,
                        "b": branch,
                        "head": head,
                        "now": plan.now_us,
                        "tcs": [item.event.token_count for item in plan.rows],
                        "bodies": [item.body for item in plan.rows],
                        "key": plan.key,
                        "last": head + len(plan.rows),
                        "exp": None if expires is None else to_us(expires),
                        "fp": plan.fingerprint if plan.key is not None else None,
                        "first": head + 1,
                    },
                )
            return Appended(head + 1)

        # With a key, a retry after a lost COMMIT replays instead of writing twice.
        return await self._runner.run(run, repeatable=plan.key is not None)

    async def _p_read(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        ranges: tuple[SeqRange, ...],
        now: datetime,
    ) -> list[list[Event]]:
        async def run(conn: Conn, attempt: Attempt) -> list[list[Event]]:
            plans: list[list[tuple[str, psycopg.AsyncCursor[Any]]]] = []
            async with self._tx(conn, attempt, tenant_id, read=True):
                view = await conn.execute(q.VIEW, (tenant_id, session_id))
                branches = branches_of(tenant_id, session_id, await view.fetchall(), now)
                if branch not in branches:
                    raise BranchNotFound(f"branch {branch!r} not found")
                for rng in ranges:
                    sql = q.EVENTS_DESC if rng.order == "desc" else q.EVENTS_ASC
                    parts: list[tuple[str, psycopg.AsyncCursor[Any]]] = []
                    for seg in plan_range(branches, branch, rng):
                        args = (tenant_id, session_id, seg.branch, seg.lo, seg.hi, rng.limit)
                        parts.append((seg.branch, await conn.execute(sql, args)))
                    plans.append(parts)
            answers: list[list[Event]] = []
            for rng, parts in zip(ranges, plans, strict=True):
                out: list[Event] = []
                for owner, cur in parts:
                    if len(out) >= rng.limit:
                        break
                    rows = await cur.fetchmany(rng.limit - len(out))
                    out += [event_of(row, owner) for row in rows]
                answers.append(out)
            return answers

        return await self._runner.run(run)

    # -- branches -----------------------------------------------------------------------

    async def _p_fork(
        self,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str,
        at_seq: int | None,
        now: datetime,
    ) -> Branch:
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
                at = fork_point(at_seq, heads[from_branch][0])
                ordinal = max(order for _, order in heads.values()) + 1
                await conn.execute(
                    q.CREATE_BRANCH,
                    (tenant_id, session_id, new_branch, ordinal, from_branch, at, at, to_us(now)),
                )
            return Branch(
                name=new_branch, head_seq=at, created_at=now, parent=from_branch, fork_seq=at
            )

        return await self._runner.run(run, repeatable=False)

    async def _p_branches(self, tenant_id: str, session_id: str, now: datetime) -> list[Branch]:
        async def run(conn: Conn, attempt: Attempt) -> list[Branch]:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.VIEW, (tenant_id, session_id))
            return list(branches_of(tenant_id, session_id, await cur.fetchall(), now).values())

        return await self._runner.run(run)

    # -- state --------------------------------------------------------------------------

    async def _p_get_state(
        self, tenant_id: str, session_id: str, branch: str, now: datetime
    ) -> StateDoc:
        async def run(conn: Conn, attempt: Attempt) -> StateDoc:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(
                    q.GET_STATE, {"t": tenant_id, "s": session_id, "b": branch}
                )
            row = await cur.fetchone()
            live(tenant_id, session_id, row, now)
            found, version, body, updated = one(row)[7:11]
            if found is None:
                raise BranchNotFound(f"branch {branch!r} not found")
            if version is None:
                return StateDoc(version=0, data={})
            return StateDoc(version=version, data=json_object(body), updated_at=from_us(updated))

        return await self._runner.run(run)

    async def _p_put_state(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        body: str,
        expected: int,
        now: datetime,
    ) -> StateDoc:
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> None:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                cur = await conn.execute(
                    q.STATE_VERSION, {"t": tenant_id, "s": session_id, "b": branch}
                )
                live(tenant_id, session_id, await locked.fetchone(), now)
                found, version = one(await cur.fetchone())
                if found is None:
                    raise BranchNotFound(f"branch {branch!r} not found")
                version = 0 if version is None else int(version)
                if version != expected:
                    raise state_conflict(version, expected)
                await conn.execute(q.PUT_STATE, (*key, branch, expected + 1, body, to_us(now)))

        await self._runner.run(run, repeatable=False)
        return StateDoc(version=expected + 1, data=json_object(body), updated_at=now)
