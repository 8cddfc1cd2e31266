"""Compatibility path: the Redis tier lives in :mod:`chatstate.store.backends.redis.tiered`."""

from chatstate.store.backends.redis.tiered import TieredStore, _cache_persists, open_tiered

__all__ = ["TieredStore", "_cache_persists", "open_tiered"]
