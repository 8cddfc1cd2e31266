"""Connecting to Redis: URLs, the client, the one boundary where driver errors become
chatstate errors, and what the server's persistence settings can lose. Used by the store
(:mod:`.store`) and the hot tier (:mod:`.tiered`)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatstate.errors import BackendUnavailable, ValidationError
from chatstate.store.url import redact

__all__ = [
    "DRIVER_ERRORS",
    "TRANSPORT_RACES",
    "RedisClient",
    "call_redis",
    "connect_client",
    "describe_persistence",
    "read_persistence",
    "refused",
]

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""A redis-py asyncio client: one server, or a cluster."""

T = TypeVar("T")

TRANSPORT_RACES = (AttributeError, TypeError)
"""Errors redis-py's asyncio transport leaks instead of ``ConnectionError`` when a
connection is closed under a write (redis/redis-py#4287); caught only around driver calls."""


DRIVER_ERRORS = (RedisError, RedisClusterException, OSError, *TRANSPORT_RACES)
"""Everything a redis-py call can raise when Redis is unwell."""

_NOT_RUN = (BusyLoadingError, TryAgainError, ClusterDownError)
"""Answers that mean the server did not run the command: safe to retry, writes included."""


def _not_run(exc: BaseException) -> bool:
    if isinstance(exc, _NOT_RUN):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(
        ("LOADING", "TRYAGAIN", "CLUSTERDOWN")
    )


async def call_redis(call: Callable[[], Awaitable[T]], *, retry: bool = False) -> T:
    """Run one Redis call; every driver error leaves as :class:`BackendUnavailable`.

    A command the server refused to run (loading its data, a slot in migration, the
    cluster down) is retried for up to about a second. After a connection error, reads
    (``retry=True``) try once more, since a pooled connection can be stale after a server
    restart; writes never do, since a lost reply can hide a write that happened.
    """
    delay = 0.05
    for attempt in range(1, 6):
        try:
            return await call()
        except RedisError as exc:
            if _not_run(exc) and attempt < 5:
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if isinstance(exc, RedisConnectionError | RedisTimeoutError) and not _not_run(exc):
                if retry and attempt == 1:
                    await asyncio.sleep(0.05)
                    continue
                raise BackendUnavailable(f"redis is unreachable: {exc}") from exc
            raise BackendUnavailable(f"redis refused the command: {exc}") from exc
        except RedisClusterException as exc:  # no reachable node, slot not covered
            raise BackendUnavailable(f"redis cluster unavailable: {exc}") from exc
        except TRANSPORT_RACES as exc:
            raise BackendUnavailable(f"redis connection closed: {exc!r}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def describe_persistence(
    appendonly: str | None, appendfsync: str | None, save: str | None
) -> tuple[bool, str]:
    """What a server with these settings can lose on a crash: ``(durable, window)``."""
    if appendonly is None:
        return False, "unknown (the server does not allow CONFIG GET)"
    if appendonly.lower() != "yes":
        if not save:
            return False, "everything: no AOF and no RDB snapshots (nothing is persisted)"
        return False, f"every write since the last RDB snapshot (no AOF; save {save!r})"
    fsync = (appendfsync or "").lower()
    if fsync == "always":
        return True, "none (appendfsync always)"
    if fsync == "everysec":
        return False, "about 1 second of acknowledged writes (appendfsync everysec)"
    return False, "up to about 30 seconds of writes (appendfsync no: the OS decides)"


OUR_PARAMS = ("prefix", "ttl_grace", "window", "lease")


def _split_url(url: str) -> tuple[str, bool, dict[str, str]]:
    """The URL for redis-py, whether it names a cluster, and our own query parameters."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValidationError(f"not a redis URL: {redact(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_PARAMS}
    rest = [(k, v) for k, v in query if k not in OUR_PARAMS]
    driver = "rediss" if scheme.startswith("rediss") else "redis"
    return (
        urlunsplit(parts._replace(scheme=driver, query=urlencode(rest))),
        scheme.endswith("+cluster"),
        ours,
    )


def connect_client(
    url: str, *, socket_timeout: float = 30.0, connect_timeout: float = 5.0
) -> tuple[RedisClient, dict[str, str]]:
    """A redis-py client for ``url`` (no connection yet) and chatstate's URL parameters.

    Commands are never retried by the driver: a retry after a lost reply could run a
    write twice. Socket time-outs keep a dead server from hanging a caller.
    """
    driver_url, cluster, ours = _split_url(url)
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
    }
    client: RedisClient
    if cluster:
        client = RedisCluster.from_url(driver_url, **options)
    else:
        client = aioredis.Redis.from_url(driver_url, **options)
    return client, ours


async def _config_get(client: RedisClient, name: str) -> str | None:
    """One server setting; on a cluster, the weakest answer of the primaries."""
    try:
        if isinstance(client, RedisCluster):
            values = []
            for node in client.get_primaries():
                got = await client.config_get(name, target_nodes=node)
                values.append(cast(dict[str, str], got).get(name))
            if name == "appendonly" and "no" in values:
                return "no"
            if name == "appendfsync":
                for weakest in ("no", "everysec", "always"):
                    if weakest in values:
                        return weakest
            return values[0] if values else None
        got = await client.config_get(name)
        return cast(dict[str, str], got).get(name)
    except ResponseError:  # CONFIG is renamed or forbidden (managed services)
        return None


async def read_persistence(client: RedisClient) -> tuple[bool, str]:
    """``(durable, loss window)`` from the server's ``appendonly``/``appendfsync``."""
    appendonly = await _config_get(client, "appendonly")
    fsync = await _config_get(client, "appendfsync") if appendonly is not None else None
    save = await _config_get(client, "save") if appendonly is not None else None
    return describe_persistence(appendonly, fsync, save)


def refused(exc: BaseException) -> bool:
    """True when nothing listens at the cache's address (the server is down)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED:
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, RedisConnectionError) and "refused" in str(exc).lower()
