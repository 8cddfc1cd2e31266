"""One service from a fleet of workers: rate limits and metrics shared through Redis.

:class:`~chatstate.server.middleware.RateLimiter` keeps its buckets in the process, so
with ``--workers N`` (or N instances) a key gets up to N times its rate. With
``--redis-url`` the service uses :class:`SharedRateLimiter` instead: each key's bucket is
one Redis hash, updated by one Lua script that reads the Redis server's clock, so every
worker and instance draws from the same bucket. Bucket keys are
``chatstate:ratelimit:{<key id>}`` (key ids are validated ids, never patterns) and expire
once a full bucket would have refilled.

If Redis does not answer, the request is limited by the worker's own bucket instead (and
a warning is logged once a minute): an outage of the cache never stops the service, it
only loosens the limit to per-worker for as long as it lasts.

:class:`MetricsShare` makes ``/metrics`` the fleet's sum: each worker writes a snapshot of
its series into one Redis hash (field = worker id) every :data:`PUBLISH_EVERY` seconds and
when it stops; a scrape of any worker publishes its own, reads every worker's and renders
the sum. A stopped worker's last snapshot stays for :data:`KEEP_SECONDS`, so the sums do
not fall back when a worker restarts. Keys start with the ``prefix`` of ``--redis-url``
(default ``chatstate``). Session-health series stay per worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from contextlib import suppress
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, urlsplit

from chatstate.model import JSONValue
from chatstate.server.errors import RateLimited
from chatstate.server.middleware import Metrics, RateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MetricsShare", "SharedRateLimiter", "connect", "namespace"]

log = logging.getLogger(__name__)

PUBLISH_EVERY = 2.0
KEEP_SECONDS = 24 * 3600.0

# KEYS[1] the bucket; ARGV rate, burst. Returns {1, 0} when admitted, {0, wait_ms}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(saved[1]) or burst
local stamp = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local admitted = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  admitted = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {admitted, wait_ms}
"""


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in Redis (module docstring)."""

    def __init__(self, client: Redis, *, rate: float, burst: int, prefix: str) -> None:
        super().__init__(rate=rate, burst=burst)
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_TAKE)
        self._warned = 0.0

    async def acquire(self, key: str) -> None:
        try:
            raw = await self._script(
                keys=[f"{self.prefix}:ratelimit:{{{key}}}"], args=[self.rate, self.burst]
            )
        except Exception:
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("shared rate limit unavailable; limiting per worker", exc_info=True)
            self.take(key)
            return
        admitted, wait_ms = cast("list[int]", raw)
        if not admitted:
            raise RateLimited(
                f"rate limit of {self.rate:g} requests per second exceeded",
                retry_after=int(wait_ms) / 1000,
            )

    async def aclose(self) -> None:
        await self.client.aclose()


def namespace(url: str) -> str:
    """The key prefix of a ``--redis-url`` (its ``prefix`` parameter, else chatstate)."""
    values = parse_qs(urlsplit(url).query).get("prefix")
    return values[0] if values and values[0] else "chatstate"


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``redis+cluster://``), without
    the tier's own query parameters; it connects on first use."""
    bare = url.split("?", 1)[0]
    if bare.startswith("redis+cluster://"):
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415 - optional extra

        cluster = RedisCluster.from_url("redis://" + bare.removeprefix("redis+cluster://"))
        return cast("Redis", cluster)
    from redis.asyncio import Redis  # noqa: PLC0415 - optional extra

    return Redis.from_url(bare, socket_timeout=2.0, socket_connect_timeout=2.0)


class MetricsShare:
    """This worker's :class:`Metrics` published to Redis, and the fleet's sum rendered."""

    def __init__(self, client: Redis, metrics: Metrics, *, prefix: str) -> None:
        self.client = client
        self.metrics = metrics
        self.key = f"{prefix}:metrics"
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="metrics-share")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            with suppress(Exception):
                await self.publish()

    async def publish(self) -> None:
        snapshot: dict[str, JSONValue] = {**self.metrics.snapshot(), "at": time.time()}
        await self.client.hset(self.key, self.worker, json.dumps(snapshot))

    async def render(self) -> str:
        """The fleet's sum; this worker's own series alone when Redis does not answer."""
        try:
            await self.publish()
            rows = cast("dict[bytes, bytes]", await self.client.hgetall(self.key))
        except Exception:
            log.warning("fleet metrics unavailable; this worker's only", exc_info=True)
            return self.metrics.render()
        total = Metrics()
        stale: list[bytes] = []
        for worker, raw in rows.items():
            try:
                snapshot = json.loads(raw)
            except ValueError:
                stale.append(worker)
                continue
            if time.time() - float(snapshot.get("at", 0)) > KEEP_SECONDS:
                stale.append(worker)
                continue
            total.absorb(snapshot)
        if stale:
            with suppress(Exception):
                await self.client.hdel(self.key, *[w.decode() for w in stale])
        return total.render()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        with suppress(Exception):
            await self.publish()
        await self.client.aclose()
