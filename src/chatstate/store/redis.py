"""Compatibility path: the Redis backend lives in :mod:`chatstate.store.backends.redis`
(needs ``pip install 'chatstate[redis]'``)."""

from chatstate.store.backends.redis.store import (
    TRANSPORT_RACES,
    RedisClient,
    RedisStore,
    connect_client,
    describe_persistence,
    open_redis_url,
    read_persistence,
)

__all__ = [
    "TRANSPORT_RACES",
    "RedisClient",
    "RedisStore",
    "connect_client",
    "describe_persistence",
    "open_redis_url",
    "read_persistence",
]
