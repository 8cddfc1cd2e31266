"""Pytest plugin for the conformance suite: ``pytest_plugins = ["chatstate.testing.plugin"]``.

It parametrizes every test that asks for ``make_store`` or ``backend`` over
:data:`~chatstate.testing.backends.REGISTRY` (narrow it with
``CHATSTATE_BACKENDS=memory,sqlite``), skips a backend whose server is down with its
one-line reason (an error instead under ``CI=true``), and marks the tests a backend lists
in ``xfail`` as strict xfail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import REGISTRY, BackendSpec, in_ci, peer_opener

__all__ = ["MakePeers", "MakeStore", "backend", "make_peers", "make_store"]

MakeStore = Callable[..., Awaitable[Store]]
MakePeers = Callable[..., Awaitable[list[Store]]]


def _selected() -> list[str]:
    wanted = os.environ.get("CHATSTATE_BACKENDS")
    names = sorted(REGISTRY)
    if wanted:
        chosen = {w.strip() for w in wanted.split(",") if w.strip()}
        names = [n for n in names if n in chosen]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", _selected())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "backend_name" not in callspec.params:
            continue
        spec = REGISTRY[callspec.params["backend_name"]]
        base = getattr(item, "originalname", item.name)
        reason = spec.xfail.get(base)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture
def backend(backend_name: str) -> BackendSpec:
    """The backend under test; skipped (or, under ``CI=true``, failed) when unreachable."""
    spec = REGISTRY[backend_name]
    reason = spec.unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"{backend_name} is required under CI=true: {reason}")
        pytest.skip(reason)
    return spec


@pytest.fixture
async def make_store(backend: BackendSpec, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """``await make_store(config=None)`` opens a fresh, empty store of the backend."""
    async with AsyncExitStack() as stack:
        count = 0

        async def make(config: StoreConfig | None = None) -> Store:
            nonlocal count
            count += 1
            folder = tmp_path / f"store{count}"
            folder.mkdir()
            return await stack.enter_async_context(backend.open(config or StoreConfig(), folder))

        yield make


@pytest.fixture
async def make_peers(make_store: MakeStore) -> AsyncIterator[MakePeers]:
    """``await make_peers(n=2, config=None)``: ``n`` store instances on one fresh database.

    Gated on ``Capabilities.shared``: a backend that does not declare it is skipped, and
    one that declares it must say how to open a second instance (``testing.backends.share``).
    """
    async with AsyncExitStack() as stack:

        async def make(n: int = 2, config: StoreConfig | None = None) -> list[Store]:
            first = await make_store(config)
            if not first.capabilities.shared:
                pytest.skip("the backend does not declare Capabilities.shared")
            opener = peer_opener(first)
            if opener is None:
                pytest.fail("a backend declaring shared=True must register a peer opener")
            peers = [first]
            for _ in range(n - 1):
                peers.append(await stack.enter_async_context(opener()))
            return peers

        yield make
