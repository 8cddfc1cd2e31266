"""Compatibility path: the in-memory backend lives in :mod:`chatstate.store.backends.memory`."""

from chatstate.store.backends.memory import MemoryStore, open_memory_url

__all__ = ["MemoryStore", "open_memory_url"]
