"""Redis (and Redis Cluster) as a standalone store: ``redis://``, ``rediss://``,
``redis+cluster://``. Needs ``pip install 'chatstate[redis]'``.

Layout. All keys of one session share the hash tag ``{tenant:session}`` (ids cannot hold
``:``, ``{`` or ``}``), so each session lives in one cluster slot and every write to it is
one Lua script, atomic on the server (see :mod:`chatstate.store.backends.redis.scripts`). Events
live in one hash per session, field ``<branch>:<seq>``: appends are O(1) per event and a
read of ``k`` events is one ``HMGET`` of ``k`` fields, whatever the length of the log.

Three indexes live outside the session's slot, each in its own key, and are therefore
written in a separate step:

* ``<prefix>:t:{tenant}:sessions`` lists a tenant's sessions (members sort by creation
  time, then id). It is written **before** the session, so an acknowledged session is
  always listed; listing skips entries whose session does not exist (yet, or any more)
  and drops them once they are older than a minute.
* ``<prefix>:g:{expiry}`` and ``<prefix>:g:{idempotency}`` tell ``purge_expired`` where to
  look. They are written **after** the session and hold a lower bound of the time to look;
  ``purge_expired`` re-checks each session and corrects the entry. A lost write there
  only delays purging: native key expiry still removes expired sessions.

Every record carries its tenant, session and the session's incarnation nonce, and every
value read back is checked against the caller's tenant and session before it is used.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeVar, cast

from chatstate.errors import (
    AlreadyExists,
    BackendUnavailable,
    BranchNotFound,
    ValidationError,
)
from chatstate.model import (
    Branch,
    Event,
    JSONValue,
    SeqRange,
    Session,
    StateDoc,
)
from chatstate.store.backends.redis.conn import (
    DRIVER_ERRORS,
    TRANSPORT_RACES,
    RedisClient,
    connect_client,
    describe_persistence,
    read_persistence,
)
from chatstate.store.backends.redis.records import (
    FIELD_SEP,
    branches_from,
    event_from,
    integrity,
    pairs,
)
from chatstate.store.backends.redis.sessions import RedisSessions
from chatstate.store.codec import (
    loads,
)
from chatstate.store.front import (
    Appended,
    AppendPlan,
    IdemRecord,
    fork_point,
    state_conflict,
)
from chatstate.store.lineage import plan_range
from chatstate.store.rules import (
    StoreConfig,
    from_us,
    to_us,
)
from chatstate.store.url import redact

__all__ = [
    "TRANSPORT_RACES",
    "RedisClient",
    "RedisStore",
    "connect_client",
    "describe_persistence",
    "open_redis_url",
    "read_persistence",
]

log = logging.getLogger("chatstate.store.redis")

T = TypeVar("T")


class RedisStore(RedisSessions):
    """A :class:`~chatstate.store.protocol.Store` on Redis or Redis Cluster.

    Build it with :func:`open_redis_url`, or around your own client (created with
    ``decode_responses=True`` and without command retries, which could run a write twice).
    ``native_ttl_grace_seconds`` is how long after ``expires_at`` Redis itself drops the
    keys of an expired session (until then it answers ``SessionExpired``). Sessions are
    handled in :mod:`.sessions`; the log here.
    """

    # -- events -------------------------------------------------------------------------

    async def _p_append(self, plan: AppendPlan) -> Appended:
        # The APPEND script runs AppendPlan.admit's checks in the same order on the server.
        tenant_id, session_id, branch, now_us = (
            plan.tenant_id,
            plan.session_id,
            plan.branch,
            plan.now_us,
        )
        key = plan.key or ""
        args: list[str | int] = [
            tenant_id,
            session_id,
            str(now_us),
            branch,
            "" if plan.expected_seq is None else str(plan.expected_seq),
            key,
            plan.fingerprint,
            str(plan.horizon_us),
            self._grace_ms,
            FIELD_SEP.join((tenant_id, session_id, branch, str(now_us))),
            str(len(plan.rows)),
        ]
        for item in plan.rows:
            tokens = item.event.token_count
            args += ["" if tokens is None else str(tokens), item.body]
        keys = self._keys.session(tenant_id, session_id)
        reply = await self._run("APPEND", keys, args)
        status = self._status(reply, session_id, branch)
        if status == "mismatch":
            raise plan.mismatch()
        if status == "conflict":
            raise plan.conflict(int(reply[1]))
        if status == "replay":
            owner, first, last, nonce = str(reply[1]), int(reply[2]), int(reply[3]), reply[4]
            replayed = [
                event_from(
                    raw,
                    tenant_id=tenant_id,
                    session_id=session_id,
                    nonce=nonce,
                    branch=owner,
                    seq=seq,
                )
                for seq, raw in zip(range(first, last + 1), reply[5], strict=True)
            ]
            record = IdemRecord(plan.fingerprint, owner, first, last, 0)
            return Appended(first, record, tuple(replayed))
        first, nonce = int(reply[1]), str(reply[3])
        if reply[4] == "1":  # the session's first idempotency record: tell purge_expired
            entry = f"{tenant_id}:{session_id}:{nonce}"
            await self._best_effort(
                "idempotency index",
                lambda: self._client.zadd(self._keys.idempotency, {entry: now_us}),
            )
        return Appended(first)

    async def _snapshot(
        self, tenant_id: str, session_id: str
    ) -> tuple[Session, str, dict[str, Branch]]:
        keys = self._keys.session(tenant_id, session_id)
        reply = await self._run("SNAPSHOT", keys[:3], [], retry=True)
        meta = pairs(reply[0])
        session = self._live(meta, tenant_id, session_id)
        return session, meta["nonce"], branches_from(pairs(reply[1]), pairs(reply[2]))

    async def _p_read(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        ranges: tuple[SeqRange, ...],
        now: datetime,
    ) -> list[list[Event]]:
        _, nonce, branches = await self._snapshot(tenant_id, session_id)
        if branch not in branches:
            raise BranchNotFound(f"branch {branch!r} not found")
        plans: list[list[tuple[str, int]]] = []
        for rng in ranges:
            plan: list[tuple[str, int]] = []
            for seg in plan_range(branches, branch, rng):
                lo, hi, want = seg.lo, seg.hi or 0, rng.limit - len(plan)
                if rng.order == "desc":
                    seqs = range(hi, max(lo, hi - want + 1) - 1, -1)
                else:
                    seqs = range(lo, min(hi, lo + want - 1) + 1)
                plan += [(seg.branch, seq) for seq in seqs]
                if len(plan) >= rng.limit:
                    break
            plans.append(plan)
        wanted = [item for plan in plans for item in plan]
        if not wanted:
            return [[] for _ in ranges]
        events_key = self._keys.session(tenant_id, session_id)[3]
        fields = [f"{owner}:{seq}" for owner, seq in wanted]
        raws = iter(
            cast(
                list[str | None],
                await self._io(lambda: self._client.hmget(events_key, fields), retry=True),
            )
        )
        return [
            [
                event_from(
                    next(raws),
                    tenant_id=tenant_id,
                    session_id=session_id,
                    nonce=nonce,
                    branch=owner,
                    seq=seq,
                )
                for owner, seq in plan
            ]
            for plan in plans
        ]

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
        now_us = to_us(now)
        reply = await self._run(
            "FORK",
            self._keys.session(tenant_id, session_id)[:3],
            [
                tenant_id,
                session_id,
                str(now_us),
                new_branch,
                from_branch,
                "" if at_seq is None else str(at_seq),
            ],
        )
        status = self._status(reply, session_id, from_branch)
        if status == "exists":
            raise AlreadyExists(f"branch {new_branch!r} already exists")
        if status == "badfork":
            fork_point(at_seq, int(reply[1]))
            raise ValidationError(f"cannot fork at seq {at_seq}")  # pragma: no cover
        at = int(reply[1])
        return Branch(
            name=new_branch,
            head_seq=at,
            created_at=from_us(now_us),
            parent=from_branch,
            fork_seq=at,
        )

    async def _p_branches(self, tenant_id: str, session_id: str, now: datetime) -> list[Branch]:
        _, _, branches = await self._snapshot(tenant_id, session_id)
        return list(branches.values())

    # -- state --------------------------------------------------------------------------

    async def _p_get_state(
        self, tenant_id: str, session_id: str, branch: str, now: datetime
    ) -> StateDoc:
        keys = self._keys.session(tenant_id, session_id)
        reply = await self._run("GET_STATE", [keys[0], keys[2], keys[6]], [branch], retry=True)
        meta = pairs(reply[0])
        self._live(meta, tenant_id, session_id)
        if not int(reply[1]):
            raise BranchNotFound(f"branch {branch!r} not found")
        tenant, session, nonce, version, body, updated = reply[2]
        if tenant is None or version is None:
            return StateDoc(version=0, data={})
        if tenant != tenant_id or session != session_id:
            raise integrity("a state document")
        if nonce != meta["nonce"]:  # left by an earlier incarnation of this session id
            return StateDoc(version=0, data={})
        return StateDoc(
            version=int(version),
            data=cast(dict[str, JSONValue], loads(body)),
            updated_at=from_us(int(updated)),
        )

    async def _p_put_state(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        body: str,
        expected: int,
        now: datetime,
    ) -> StateDoc:
        expected_version, now_us = expected, to_us(now)
        keys = self._keys.session(tenant_id, session_id)
        reply = await self._run(
            "PUT_STATE",
            [keys[0], keys[2], keys[6]],
            [tenant_id, session_id, str(now_us), str(expected_version), body, branch],
        )
        if self._status(reply, session_id, branch) == "conflict":
            raise state_conflict(int(reply[1]), expected_version)
        return StateDoc(
            version=int(reply[1]),
            data=cast(dict[str, JSONValue], loads(body)),
            updated_at=from_us(now_us),
        )

    async def _p_close(self) -> None:
        await self._client.aclose()


async def open_redis_url(url: str, config: StoreConfig) -> RedisStore:
    """``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS) or
    ``redis+cluster://host:port`` (any node of the cluster as the seed).

    Query parameters of our own: ``prefix`` (key prefix, default ``cs``) and ``ttl_grace``
    (seconds after expiry before Redis drops an expired session's keys, default 600); the
    rest go to redis-py (for example ``socket_timeout``).
    """
    client, ours = connect_client(url)
    try:
        await client.ping()
        durable, window = await read_persistence(client)
    except DRIVER_ERRORS as exc:
        await client.aclose()
        raise BackendUnavailable(f"cannot reach redis at {redact(url)}: {exc}") from exc
    if durable:
        log.info("redis at %s: acknowledged writes survive a crash (%s)", redact(url), window)
    else:
        log.warning(
            "redis at %s: a crash of the server can lose %s; use appendonly yes + "
            "appendfsync always for no loss",
            redact(url),
            window,
        )
    try:
        grace = float(ours.get("ttl_grace", "600"))
        return RedisStore(
            client,
            config=config,
            prefix=ours.get("prefix", "cs"),
            durable=durable,
            loss_window=window,
            native_ttl_grace_seconds=grace,
        )
    except ValueError as exc:
        await client.aclose()
        raise ValidationError(f"bad ttl_grace in {redact(url)!r}") from exc
    except BaseException:
        await client.aclose()
        raise
