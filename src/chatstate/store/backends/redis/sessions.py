"""The Redis backend's sessions: create, list, TTL, delete and purge, with their indexes.

See :mod:`chatstate.store.backends.redis.store` for the key layout; the log (append, read,
fork, state) is there too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

from redis.commands.core import AsyncScript

from chatstate.errors import (
    AlreadyExists,
    BranchNotFound,
    SessionExpired,
    SessionNotFound,
)
from chatstate.model import (
    Capabilities,
    JSONValue,
    Session,
)
from chatstate.store.backends.redis import scripts as lua
from chatstate.store.backends.redis.conn import (
    DRIVER_ERRORS,
    RedisClient,
    call_redis,
)
from chatstate.store.backends.redis.records import (
    Keys,
    index_member,
    integrity,
    pairs,
    parse_member,
    session_from,
    ttl_to_us,
)
from chatstate.store.codec import (
    dumps,
    loads,
)
from chatstate.store.front import (
    MetadataFilter,
    NewSession,
    StoreFront,
)
from chatstate.store.rules import (
    StoreConfig,
    check_id,
    ensure_live,
    from_us,
    metadata_matches,
    to_us,
)

__all__ = ["RedisSessions"]

log = logging.getLogger("chatstate.store.redis")

T = TypeVar("T")

_STALE_INDEX_US = 60 * 1_000_000  # index entries younger than this may be a create in flight


class RedisSessions(StoreFront):
    """The session half of :class:`~chatstate.store.backends.redis.store.RedisStore`:
    connection, I/O boundary, reply decoding and the session primitives."""

    def __init__(
        self,
        client: RedisClient,
        *,
        config: StoreConfig | None = None,
        prefix: str = "cs",
        durable: bool = False,
        loss_window: str = "unknown",
        native_ttl_grace_seconds: float = 600.0,
    ) -> None:
        check_id(prefix, "redis key prefix", max_len=64)
        super().__init__(config)
        self._client = client
        self._keys = Keys(prefix)
        self._durable = durable
        self.loss_window = loss_window
        """What a crash of the server can lose, as read from its settings at start."""
        self._grace_ms = str(int(native_ttl_grace_seconds * 1000))
        self._idem_ttl_us = int(self._config.idempotency_ttl_seconds * 1_000_000)
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "SNAPSHOT",
                "CREATE",
                "APPEND",
                "FORK",
                "GET_STATE",
                "PUT_STATE",
                "SET_TTL",
                "DELETE",
                "PURGE_ONE",
                "IDEM_CLEAN",
                "INDEX_CAS",
            )
        }

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(durable=self._durable, shared=True, native_ttl=True)

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def prefix(self) -> str:
        return self._keys.prefix

    # -- I/O boundary: every driver error becomes a chatstate error here ------------------

    async def _io(self, call: Callable[[], Awaitable[T]], *, retry: bool = False) -> T:
        return await call_redis(call, retry=retry)

    async def _run(
        self, name: str, keys: Sequence[str], args: Sequence[str | int], *, retry: bool = False
    ) -> list[Any]:
        script = self._scripts[name]
        reply = await self._io(lambda: script(keys=keys, args=args), retry=retry)
        return cast(list[Any], reply)

    async def _best_effort(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        """An index update after the session write: failure delays cleanup only."""
        try:
            await call()
        except DRIVER_ERRORS as exc:
            log.warning("redis: %s failed (%s); purge_expired will catch up", what, exc)

    # -- decoding, with the owner check ------------------------------------------------

    def _status(self, reply: list[Any], session_id: str, branch: str | None = None) -> str:
        status = str(reply[0])
        if status == "nosession":
            raise SessionNotFound(f"session {session_id!r} not found")
        if status == "expired":
            raise SessionExpired(f"session {session_id!r} has expired")
        if status == "integrity":
            raise integrity("a session record")
        if status == "nobranch":
            raise BranchNotFound(f"branch {branch!r} not found")
        return status

    def _session(self, rec: Mapping[str, str], tenant_id: str, session_id: str) -> Session:
        return session_from(rec, tenant_id, session_id)

    def _live(self, rec: Mapping[str, str], tenant_id: str, session_id: str) -> Session:
        return ensure_live(self._session(rec, tenant_id, session_id), self._config.clock())

    # -- sessions -----------------------------------------------------------------------

    async def _p_create(self, new: NewSession) -> Session:
        tenant_id, session_id, user_id = new.tenant_id, new.session_id, new.user_id
        ttl_seconds, meta_json = new.ttl_seconds, new.metadata_json
        now_us = to_us(new.now)
        nonce = secrets.token_hex(8)
        ttl_us = ttl_to_us(ttl_seconds) if ttl_seconds is not None else None
        expires_us = now_us + ttl_us if ttl_us is not None else None
        index, member = self._keys.tenant(tenant_id), index_member(now_us, session_id, nonce)
        # The listing entry goes first: once the session exists, it is listed.
        await self._io(lambda: self._client.zadd(index, {member: 0}))
        reply = await self._run(
            "CREATE",
            self._keys.session(tenant_id, session_id),
            [
                tenant_id,
                session_id,
                str(now_us),
                nonce,
                user_id or "",
                meta_json,
                dumps(ttl_seconds) if ttl_seconds is not None else "",
                str(ttl_us) if ttl_us is not None else "",
                str(expires_us) if expires_us is not None else "",
                f"{now_us}|||0",
                self._grace_ms,
            ],
        )
        status = self._status(reply, session_id)
        if status == "exists":
            await self._best_effort("index cleanup", lambda: self._client.zrem(index, member))
            raise AlreadyExists(f"session {session_id!r} already exists")
        if status == "replaced":  # an expired session of that id was purged on the way
            old = index_member(int(reply[2]), session_id, str(reply[1]))
            await self._best_effort("index cleanup", lambda: self._client.zrem(index, old))
        if expires_us is not None:
            entry = f"{tenant_id}:{session_id}:{nonce}"
            await self._best_effort(
                "expiry index", lambda: self._client.zadd(self._keys.expiry, {entry: expires_us})
            )
        created = from_us(now_us)
        return Session(
            tenant_id=tenant_id,
            id=session_id,
            created_at=created,
            updated_at=created,
            metadata=cast(dict[str, JSONValue], loads(meta_json)),
            user_id=user_id,
            ttl_seconds=ttl_seconds,
            expires_at=from_us(expires_us) if expires_us is not None else None,
        )

    async def _p_get(self, tenant_id: str, session_id: str, now: datetime) -> Session:
        key = self._keys.session(tenant_id, session_id)[0]
        rec = await self._io(lambda: self._client.hgetall(key), retry=True)
        return self._live(cast(dict[str, str], rec), tenant_id, session_id)

    async def _metas(self, tenant_id: str, members: Sequence[str]) -> list[dict[str, str]]:
        """The session records of some tenant index members, in one round trip."""

        async def fetch() -> list[dict[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self._keys.session(tenant_id, parse_member(member)[1])[0])
            return cast(list[dict[str, str]], await pipe.execute())

        return await self._io(fetch, retry=True)

    async def _p_list(
        self,
        tenant_id: str,
        user_id: str | None,
        metadata: MetadataFilter,
        limit: int,
        after: tuple[int, str] | None,
        now: datetime,
    ) -> list[Session]:
        limit -= 1  # the loop below collects one more than ``limit``
        start = "+"
        if after is not None:
            start = f"({after[0]:020d}\x01{after[1]}\x01"
        old = to_us(now) - _STALE_INDEX_US
        index = self._keys.tenant(tenant_id)
        batch = min(max(limit + 1, 32), 1000)
        found: list[Session] = []
        stale: list[str] = []
        while len(found) <= limit:
            members = cast(
                list[str],
                await self._io(
                    partial(
                        self._client.execute_command,
                        *("ZRANGE", index, start, "-", "BYLEX", "REV", "LIMIT", 0, batch),
                    ),
                    retry=True,
                ),
            )
            if not members:
                break
            for member, rec in zip(members, await self._metas(tenant_id, members), strict=True):
                created_us, sid, nonce = parse_member(member)
                if not rec or rec.get("nonce") != nonce:
                    if created_us < old:  # deleted or a failed create, not one in flight
                        stale.append(member)
                    continue
                session = self._session(rec, tenant_id, sid)
                if session.expires_at is not None and session.expires_at <= now:
                    continue
                if user_id is not None and session.user_id != user_id:
                    continue
                if not metadata_matches(session.metadata, metadata):
                    continue
                found.append(session)
                if len(found) > limit:
                    break
            if len(members) < batch:
                break
            start = "(" + members[-1]
        if stale:
            await self._best_effort("index cleanup", lambda: self._client.zrem(index, *stale))
        return found[: limit + 1]

    async def _p_set_ttl(
        self,
        tenant_id: str,
        session_id: str,
        ttl_seconds: float | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> Session:
        now_us = to_us(now)
        ttl_us = ttl_to_us(ttl_seconds) if ttl_seconds is not None else None
        expires_us = now_us + ttl_us if ttl_us is not None else None
        reply = await self._run(
            "SET_TTL",
            self._keys.session(tenant_id, session_id),
            [
                tenant_id,
                session_id,
                str(now_us),
                dumps(ttl_seconds) if ttl_seconds is not None else "",
                str(ttl_us) if ttl_us is not None else "",
                str(expires_us) if expires_us is not None else "",
                self._grace_ms,
            ],
        )
        self._status(reply, session_id)
        rec = pairs(reply[1])
        if expires_us is not None:  # only ever lower the entry: it is a lower bound
            entry = f"{tenant_id}:{session_id}:{rec['nonce']}"
            await self._best_effort(
                "expiry index",
                lambda: self._client.zadd(self._keys.expiry, {entry: expires_us}, lt=True),
            )
        return self._session(rec, tenant_id, session_id)

    async def _forget(self, tenant_id: str, session_id: str, nonce: str, created: int) -> None:
        """Drop a deleted session's index entries (each names only that incarnation)."""
        entry = f"{tenant_id}:{session_id}:{nonce}"

        async def drop() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.zrem(self._keys.tenant(tenant_id), index_member(created, session_id, nonce))
            pipe.zrem(self._keys.expiry, entry)
            pipe.zrem(self._keys.idempotency, entry)
            await pipe.execute()

        await self._best_effort("index cleanup", drop)

    async def _p_delete(self, tenant_id: str, session_id: str) -> bool:
        reply = await self._run(
            "DELETE", self._keys.session(tenant_id, session_id), [tenant_id, session_id]
        )
        if str(reply[0]) == "nosession":
            return False
        self._status(reply, session_id)
        await self._forget(tenant_id, session_id, str(reply[1]), int(reply[2]))
        return True

    async def _p_delete_many(self, tenant_id: str, user_id: str | None) -> int:
        index = self._keys.tenant(tenant_id)
        members = cast(
            list[str], await self._io(lambda: self._client.zrange(index, 0, -1), retry=True)
        )
        deleted = 0
        for start in range(0, len(members), 500):
            chunk = members[start : start + 500]
            for member, rec in zip(chunk, await self._metas(tenant_id, chunk), strict=True):
                _, sid, nonce = parse_member(member)
                if not rec or rec.get("nonce") != nonce:
                    continue
                session = self._session(rec, tenant_id, sid)
                if user_id is not None and session.user_id != user_id:
                    continue
                reply = await self._run(
                    "DELETE", self._keys.session(tenant_id, sid), [tenant_id, sid]
                )
                if str(reply[0]) == "ok":
                    deleted += 1
                    await self._forget(tenant_id, sid, str(reply[1]), int(reply[2]))
        return deleted

    async def _p_purge(self, now: datetime, idem_horizon_us: int) -> int:
        now_us = to_us(now)
        purged = 0
        due = cast(
            list[tuple[str, float]],
            await self._io(
                lambda: self._client.zrangebyscore(
                    self._keys.expiry, "-inf", now_us, withscores=True
                ),
                retry=True,
            ),
        )
        for entry, seen in due:
            tenant_id, session_id, nonce = entry.split(":")
            reply = await self._run(
                "PURGE_ONE",
                self._keys.session(tenant_id, session_id),
                [tenant_id, session_id, nonce, str(now_us)],
            )
            status = str(reply[0])
            if status == "integrity":
                raise integrity("a session record")
            if status == "deleted":
                purged += 1
                await self._forget(tenant_id, session_id, nonce, int(reply[1]))
            elif status == "stale":
                await self._best_effort(
                    "expiry index", partial(self._client.zrem, self._keys.expiry, entry)
                )
            else:  # live: the session was refreshed; move its entry to its real expiry
                await self._run("INDEX_CAS", [self._keys.expiry], [entry, int(seen), reply[1]])
        await self._purge_idempotency(idem_horizon_us)
        return purged

    async def _purge_idempotency(self, horizon_us: int) -> None:
        due = cast(
            list[tuple[str, float]],
            await self._io(
                lambda: self._client.zrangebyscore(
                    self._keys.idempotency, "-inf", horizon_us, withscores=True
                ),
                retry=True,
            ),
        )
        for entry, seen in due:
            tenant_id, session_id, nonce = entry.split(":")
            keys = self._keys.session(tenant_id, session_id)
            reply = await self._run(
                "IDEM_CLEAN",
                [keys[0], keys[4], keys[5]],
                [tenant_id, session_id, nonce, str(horizon_us)],
            )
            status = str(reply[0])
            if status == "integrity":
                raise integrity("a session record")
            if status == "stale":
                await self._best_effort(
                    "idempotency index", partial(self._client.zrem, self._keys.idempotency, entry)
                )
            else:
                left = "" if status == "empty" else str(reply[1])
                await self._run("INDEX_CAS", [self._keys.idempotency], [entry, int(seen), left])
