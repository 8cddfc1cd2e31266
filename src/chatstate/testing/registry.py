"""The registry of backends the conformance suite runs against, and a clock tests can move.

Each backend registers a :class:`BackendSpec`: how to open a fresh, empty store for one
test, whether its server is reachable (a one-line skip reason when it is not), and the
contract tests it is known to fail, each with a written reason (run as strict xfail, so a
fix that makes one pass is noticed). :mod:`chatstate.testing.backends` registers the
built-in backends; a backend module of its own imports only this one.

Under ``CI=true`` a backend whose server is unreachable is an error, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from weakref import WeakKeyDictionary

from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig

__all__ = [
    "REGISTRY",
    "BackendSpec",
    "FakeClock",
    "PeerOpener",
    "in_ci",
    "peer_opener",
    "process_url",
    "register",
    "share",
]

Opener = Callable[[StoreConfig, Path], AbstractAsyncContextManager[Store]]
PeerOpener = Callable[[], AbstractAsyncContextManager[Store]]

_PEERS: WeakKeyDictionary[Store, PeerOpener] = WeakKeyDictionary()
_URLS: WeakKeyDictionary[Store, str] = WeakKeyDictionary()


def share(store: Store, peer: PeerOpener, *, url: str | None = None) -> Store:
    """Declare how to open another instance on ``store``'s database (and, with ``url``,
    how another OS process reaches it through ``open_store``). Openers call this."""
    _PEERS[store] = peer
    if url is not None:
        _URLS[store] = url
    return store


def peer_opener(store: Store) -> PeerOpener | None:
    """How to open a second instance on ``store``'s database, if its backend can."""
    return _PEERS.get(store)


def process_url(store: Store) -> str | None:
    """An ``open_store`` URL another process can use to reach ``store``'s database."""
    return _URLS.get(store)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    open: Opener
    """Open a fresh, empty store using ``config``; ``Path`` is a private temp folder."""
    unavailable: Callable[[], str | None] = lambda: None
    """A one-line reason when the backend's server cannot be reached, else ``None``."""
    xfail: Mapping[str, str] = field(default_factory=dict)
    """Conformance test name -> why this backend fails it today."""


REGISTRY: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> BackendSpec:
    REGISTRY[spec.name] = spec
    return spec


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class FakeClock:
    """A settable UTC clock: pass ``StoreConfig(clock=clock)`` and call ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
