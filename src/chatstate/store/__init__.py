"""Storage: the protocol, the shared rules and the backends."""

from chatstate.store.backends.memory import MemoryStore
from chatstate.store.protocol import Order, Store
from chatstate.store.rules import StoreConfig, StoreLimits

__all__ = ["MemoryStore", "Order", "Store", "StoreConfig", "StoreLimits"]
