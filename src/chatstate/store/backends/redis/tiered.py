"""The Redis hot tier: any store as the system of record, Redis caching each active
session's recent window. Opened by ``open_store(url, cache_url="redis://...")``.

What is cached: per session and branch, the newest ``window`` events of the branch's view,
so ``read_last`` and tail reads skip reading events from the system of record. Everything
else goes straight to the system of record.

**A window is served only after the system of record confirms it.** Each window carries
the branch's validator (its ``created_at``) and head seq; a read that finds a window asks
the system of record for the session's branches (``list_branches``: one indexed read, no
events) and serves the window only when both match. The log is append-only and dense, so
a match means the window holds exactly what the system of record holds (the argument is
in :mod:`.tier_window`). A window that does not match (a cache restored from an older
snapshot, an update lost on the way) is discarded and refilled, never served; a session
the system of record no longer has (deleted, expired) has its cache entries erased and the
read raises as the system of record does. Cost: a hit is one Redis call and one
``list_branches``; a miss is one Redis call, ``list_branches``, ``read_last`` and one
Redis call to fill, as many calls to the system of record as before.

Writes go to the system of record **first**; the cache is told afterwards, in one Lua
script: an append extends the window when it directly follows it and drops it otherwise;
create, delete and ``set_ttl`` drop every window of the session. Every such script also
bumps the session's generation, and a window is filled from the system of record only if
the generation did not move since the fill began, so a slow reader can never put back a
window older than a write that finished meanwhile.

Failures. A window is also served only while it is younger than ``lease`` (default 5 s, by
Redis's clock), counted from a moment before which it is known to hold every write. When
a writer cannot tell the cache about its write (Redis unreachable, timed out), it waits
until that lease has run out before it acknowledges. It skips the wait only when Redis
refused the connection and the cache server keeps no data across restarts (checked at
start). Reads fall back to the system of record whenever Redis fails; nothing raises
because of the cache, and nothing is ever only in the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from redis.commands.core import AsyncScript

from chatstate.errors import ChatstateError, SessionNotFound
from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Event,
    JSONValue,
    NewEvent,
    Session,
)
from chatstate.store.backends.redis import tier_scripts as lua
from chatstate.store.backends.redis.conn import (
    DRIVER_ERRORS,
    RedisClient,
    connect_client,
)
from chatstate.store.backends.redis.conn import (
    refused as _refused,
)
from chatstate.store.backends.redis.tier_window import (
    TierStats,
    cache_persists,
    decode_page,
    encode_entry,
    page_of,
    unwrap,
    validator,
)
from chatstate.store.front import read_last_via
from chatstate.store.protocol import Order, Store
from chatstate.store.rules import StoreConfig, check_id, check_read
from chatstate.store.url import redact
from chatstate.store.wrapper import StoreWrapper

__all__ = ["TierStats", "TieredStore", "open_tiered"]

log = logging.getLogger("chatstate.store.tiered")

_RETRY_AFTER = 1.0  # seconds reads skip Redis after it failed


class TieredStore(StoreWrapper):
    """A :class:`~chatstate.store.protocol.Store` that caches recent windows in Redis.

    ``store`` is the system of record; ``client`` a redis-py asyncio client created with
    ``decode_responses=True`` (see :func:`chatstate.store.backends.redis.store.connect_client`).
    ``cache_persists`` says whether the cache server may come back after a restart with
    old data (``None``: not known yet; it is read from the server once it answers, and
    counts as yes until then). ``stats`` counts what reads found in the cache.
    """

    def __init__(
        self,
        store: Store,
        client: RedisClient,
        *,
        config: StoreConfig | None = None,
        prefix: str = "csc",
        window: int = 50,
        lease_seconds: float = 5.0,
        cache_ttl_seconds: float = 3600.0,
        cache_persists: bool | None = None,
        owns_store: bool = True,
    ) -> None:
        check_id(prefix, "redis key prefix", max_len=64)
        if not 1 <= window <= 1000:
            raise ValueError("window must be between 1 and 1000 events")
        super().__init__(store, owns_store=owns_store)
        self._client = client
        self._config = config or StoreConfig()
        self._prefix = prefix
        self._window = window
        self._lease = lease_seconds
        self._lease_ms = str(int(lease_seconds * 1000))
        self._cache_ttl_ms = int(cache_ttl_seconds * 1000)
        self._keep_ms = str(int(max(60.0, 4 * lease_seconds) * 1000))
        self._persists = cache_persists
        self._down_until = 0.0
        self.stats = TierStats()
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(getattr(lua, name))
            for name in ("TIER_GET", "TIER_FILL", "TIER_ADVANCE", "TIER_INVALIDATE")
        }

    @property
    def client(self) -> RedisClient:
        return self._client

    # -- the cache, which never raises to the caller -------------------------------------

    def _key(self, tenant_id: str, session_id: str) -> str:
        return f"{self._prefix}:c:{{{tenant_id}:{session_id}}}"

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _trip(self, exc: BaseException) -> None:
        if self._usable():
            log.warning(
                "redis cache unavailable (%s: %s); serving from the system of record",
                type(exc).__name__,
                exc,
            )
        self._down_until = time.monotonic() + _RETRY_AFTER

    async def _run(self, name: str, key: str, args: Sequence[str | int]) -> list[Any]:
        reply = await self._scripts[name](keys=[key], args=args)
        result = cast(list[Any], reply)
        if result and result[0] == "integrity":
            log.error("redis cache key %s holds another session's data; refusing it", key)
            raise ChatstateError("the cache returned another session's data; refusing it")
        return result

    async def _tell(self, call: Callable[[], Awaitable[object]], done_at: float) -> None:
        """Tell the cache about a write that the system of record has committed.

        One retry on a fresh connection tells a dropped connection from a server that is
        down. If both fail, wait until no window that could lack the write is served any
        more, unless the server refused the connection (it is down) and keeps nothing
        across restarts. The scripts are safe to run twice.
        """
        failure: BaseException = RuntimeError("not run")
        for _ in range(2):
            try:
                await call()
            except (*DRIVER_ERRORS, ChatstateError) as exc:
                failure = exc
                continue
            self._down_until = 0.0
            return
        self._trip(failure)
        if _refused(failure) and self._persists is False:
            return
        wait = self._lease - (time.monotonic() - done_at)
        if wait > 0:
            log.warning("cache not updated; waiting %.1f s for its lease to run out", wait)
            await asyncio.sleep(wait)

    async def _invalidate(self, tenant_id: str, session_id: str, done_at: float) -> None:
        key = self._key(tenant_id, session_id)
        await self._tell(
            lambda: self._run("TIER_INVALIDATE", key, [tenant_id, session_id, self._keep_ms]),
            done_at,
        )

    def _entry(self, tenant_id: str, session_id: str, event: Event) -> str:
        return encode_entry(self._config.limits, tenant_id, session_id, event)

    # -- reads ----------------------------------------------------------------------------

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
        # The same checks, in the same order, as every backend: a hit must refuse what
        # the system of record would refuse.
        check_read(branch, after_seq, before_seq, limit, order, self._config.limits)
        check_id(tenant_id, "tenant_id")
        check_id(session_id, "session_id")
        if self._usable():
            cached = await self._cached(
                tenant_id, session_id, branch, after_seq, before_seq, limit, order
            )
            if cached is not None:
                return cached
        return await self._store.read(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=branch,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            order=order,
        )

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        return await read_last_via(self, tenant_id, session_id, branch, n)

    async def _cached(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        after_seq: int,
        before_seq: int | None,
        limit: int,
        order: Order,
    ) -> list[Event] | None:
        """The answer from a window the system of record confirms, filling it on a miss;
        ``None`` to ask the store. For a tail read (no ``before_seq``) the cache and the
        system of record are asked at once, so a hit waits for the slower of the two."""
        key = self._key(tenant_id, session_id)
        before = "" if before_seq is None else before_seq
        args: list[str | int] = [tenant_id, session_id, branch, after_seq, before, limit, order]
        args.append(self._lease_ms)
        if before_seq is None:
            got = await asyncio.gather(
                self._get(key, args),
                self._branch(tenant_id, session_id, branch),
                return_exceptions=True,
            )
            truth, reply = unwrap(got[1]), unwrap(got[0])  # the store's error first
        else:
            reply = await self._get(key, args)
            if reply is None or reply[0] != "hit":
                return None  # older history than the window holds: the store answers
            truth = await self._branch(tenant_id, session_id, branch)
        if reply is None or reply[0] == "short":
            return None
        if truth is None:
            return None  # no such branch: the store raises
        if reply[0] == "hit":
            if int(reply[3]) == truth.head_seq and str(reply[4]) == validator(truth):
                self.stats.hits += 1
                first, raws = int(reply[5]), cast(list[str | None], reply[7])
                return decode_page(raws, first, tenant_id, session_id, order)
            self.stats.stale += 1
            log.debug("stale cache window of a session discarded; refilling it")
            if before_seq is not None:
                return None
        else:
            self.stats.misses += 1
        window = await self._fill(tenant_id, session_id, truth, str(reply[1]), int(reply[2]))
        return None if window is None else page_of(window, after_seq, limit, order)

    async def _get(self, key: str, args: list[str | int]) -> list[Any] | None:
        """The cache's candidate (``TIER_GET``); ``None`` when Redis failed."""
        try:
            reply = await self._run("TIER_GET", key, args)
            if self._persists is None:
                self._persists = await cache_persists(self._client)
        except DRIVER_ERRORS as exc:
            self._trip(exc)
            return None
        return reply

    async def _branch(self, tenant_id: str, session_id: str, branch: str) -> Branch | None:
        """The branch as the system of record has it now. A session it does not have
        (deleted, expired) has its cache entries erased, then the store's error raises."""
        try:
            branches = await self._store.list_branches(tenant_id=tenant_id, session_id=session_id)
        except SessionNotFound:  # SessionExpired too
            await self._erase(tenant_id, session_id)
            raise
        return next((b for b in branches if b.name == branch), None)

    async def _erase(self, tenant_id: str, session_id: str) -> None:
        """Erase what the cache holds of a session the system of record does not have."""
        key = self._key(tenant_id, session_id)
        try:
            reply = await self._run(
                "TIER_INVALIDATE", key, [tenant_id, session_id, self._keep_ms, 1]
            )
        except (*DRIVER_ERRORS, ChatstateError) as exc:
            self._trip(exc)
            return
        if reply[0] == "ok":
            self.stats.erased += 1

    async def _fill(
        self, tenant_id: str, session_id: str, truth: Branch, gen: str, stamp_ms: int
    ) -> list[Event] | None:
        """Read the window from the store and put it in the cache (if nothing moved).

        ``truth`` was read before the events: if the session is re-created in between,
        the window holds the new events under the old validator and is never served."""
        window = await self._store.read_last(
            tenant_id=tenant_id, session_id=session_id, branch=truth.name, n=self._window
        )
        args: list[str | int] = [
            tenant_id,
            session_id,
            truth.name,
            gen,
            stamp_ms,
            window[-1].seq if window else 0,
            window[0].seq if window else 1,
            validator(truth),
            self._lease_ms,
            self._cache_ttl_ms,
        ]
        try:
            for event in window:
                args += [event.seq, self._entry(tenant_id, session_id, event)]
        except ChatstateError:
            return window  # an event the codec refuses today: serve it, do not cache it
        try:
            await self._run("TIER_FILL", self._key(tenant_id, session_id), args)
        except DRIVER_ERRORS as exc:
            self._trip(exc)
        return window

    # -- writes: the system of record first, then the cache --------------------------------

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
        began = time.monotonic()
        try:
            result = await self._store.append(
                tenant_id=tenant_id,
                session_id=session_id,
                events=events,
                branch=branch,
                expected_seq=expected_seq,
                idempotency_key=idempotency_key,
            )
        except ChatstateError as exc:
            if exc.status >= 500:  # the outcome is unknown: forget what we hold
                await self._invalidate(tenant_id, session_id, time.monotonic())
            raise
        if result.replayed:
            return result
        done_at = time.monotonic()
        tail = result.events[-self._window :]
        args: list[str | int] = [
            tenant_id,
            session_id,
            result.branch,
            result.first_seq,
            result.last_seq,
            int((done_at - began) * 1000) + 1,
            self._lease_ms,
            self._window,
            self._cache_ttl_ms,
        ]
        try:
            for event in tail:
                args += [event.seq, self._entry(tenant_id, session_id, event)]
        except ChatstateError:
            await self._invalidate(tenant_id, session_id, done_at)
            return result
        key = self._key(tenant_id, session_id)
        await self._tell(lambda: self._run("TIER_ADVANCE", key, args), done_at)
        return result

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        session = await self._store.create_session(
            tenant_id=tenant_id,
            session_id=session_id,
            user_id=user_id,
            metadata=metadata,
            ttl_seconds=ttl_seconds,
        )
        # A session of that id may have expired and been purged: forget its windows.
        await self._invalidate(tenant_id, session.id, time.monotonic())
        return session

    async def set_ttl(
        self, *, tenant_id: str, session_id: str, ttl_seconds: float | None
    ) -> Session:
        session = await self._store.set_ttl(
            tenant_id=tenant_id, session_id=session_id, ttl_seconds=ttl_seconds
        )
        await self._invalidate(tenant_id, session_id, time.monotonic())
        return session

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        await self._store.delete_session(tenant_id=tenant_id, session_id=session_id)
        await self._invalidate(tenant_id, session_id, time.monotonic())

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        """Delete session by session (each through :meth:`delete_session`, so each cache
        entry goes too), then let the store delete what listing does not show (expired
        sessions)."""
        deleted = 0
        while True:
            page = await self._store.list_sessions(tenant_id=tenant_id, user_id=user_id, limit=500)
            if not page.items:
                break
            for session in page.items:
                try:
                    await self.delete_session(tenant_id=tenant_id, session_id=session.id)
                    deleted += 1
                except SessionNotFound:
                    continue
        return deleted + await self._store.delete_sessions(tenant_id=tenant_id, user_id=user_id)

    # -- everything else is the system of record's (StoreWrapper) -------------------------

    async def close(self) -> None:
        try:
            await self._client.aclose()
        finally:
            if self._owns_store:
                await self._store.close()


_cache_persists = cache_persists  # the name tests and older imports use


async def open_tiered(store: Store, cache_url: str, config: StoreConfig) -> TieredStore:
    """Wrap ``store`` (the system of record) in the Redis hot tier at ``cache_url``.

    URL parameters of our own: ``prefix`` (default ``csc``), ``window`` (events per
    branch, default 50), ``lease`` (seconds, default 5). A cache that cannot be reached at
    start is not an error: reads use the store until it answers.
    """
    client, ours = connect_client(cache_url, socket_timeout=0.5, connect_timeout=0.5)
    persists = await cache_persists(client)
    if persists is None:
        log.warning("redis cache at %s is not reachable yet; using the store", redact(cache_url))
    elif persists:
        log.warning(
            "redis cache at %s keeps data across restarts (or its settings are unreadable); "
            "a write that cannot update it waits out the window lease before it returns",
            redact(cache_url),
        )
    return TieredStore(
        store,
        client,
        config=config,
        prefix=ours.get("prefix", "csc"),
        window=int(ours.get("window", "50")),
        lease_seconds=float(ours.get("lease", "5")),
        cache_persists=persists,
    )
