"""One rate limit for a fleet of workers: token buckets kept in Redis.

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
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from chatstate.server.errors import RateLimited
from chatstate.server.middleware import RateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SharedRateLimiter", "shared_limiter"]

log = logging.getLogger(__name__)

_PREFIX = "chatstate:ratelimit:"

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

    def __init__(self, client: Redis, *, rate: float, burst: int) -> None:
        super().__init__(rate=rate, burst=burst)
        self.client = client
        self._script = client.register_script(_TAKE)
        self._warned = 0.0

    async def acquire(self, key: str) -> None:
        try:
            raw = await self._script(keys=[f"{_PREFIX}{{{key}}}"], args=[self.rate, self.burst])
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


def shared_limiter(url: str, *, rate: float, burst: int) -> SharedRateLimiter:
    """A shared limiter on the Redis at ``url`` (``redis://``, ``rediss://`` or
    ``redis+cluster://``); connects lazily, on the first request."""
    if url.startswith("redis+cluster://"):
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415 - optional extra

        cluster = RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"))
        return SharedRateLimiter(cast("Redis", cluster), rate=rate, burst=burst)
    from redis.asyncio import Redis  # noqa: PLC0415 - optional extra

    client = Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    return SharedRateLimiter(client, rate=rate, burst=burst)
