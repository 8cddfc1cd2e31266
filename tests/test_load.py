"""The open-loop load test against a live server on loopback: it stops by itself and
its history passes the consistency checker."""

from __future__ import annotations

import asyncio

from chatstate.bench.load import run_load
from chatstate.server import ServerConfig, create_app
from chatstate.store.memory import MemoryStore
from test_server_support import live_server


async def test_load_smoke_is_consistent() -> None:
    store = MemoryStore()
    # A fixed bound: the load tool runs on the server's own event loop here, so its work
    # makes the loop late and the adaptive bound would turn bursts away (that behaviour is
    # test_admission.py's); this test is about the load tool's counts.
    config = ServerConfig(
        dev_mode=True, rate_per_second=10_000, rate_burst=10_000, min_in_flight=64
    )
    app = create_app(config, store=store)
    async with live_server(app) as live:
        report = await run_load(live.base_url, sessions=5, rate=80, duration=2.0)
    assert report.sent >= 150
    assert report.ok >= report.sent * 0.95, report.errors
    assert report.anomalies == []
    reads = [op for op in report.ops if op.kind == "read" and op.ok]
    appends = [op for op in report.ops if op.kind == "append" and op.ok]
    assert reads and appends
    assert report.percentile(0.99) > 0


async def test_load_counts_429s_and_cleans_up_under_the_rate_limit() -> None:
    """A rate limit far below the offered load: the tool neither crashes nor loses count,
    and removes its sessions. (Any machine speed: 2 tokens/s cannot cover 60 requests.)"""
    store = MemoryStore()
    config = ServerConfig(dev_mode=True, rate_per_second=2, rate_burst=8)
    app = create_app(config, store=store)
    async with live_server(app) as live:
        report = await run_load(live.base_url, sessions=3, rate=60, duration=1.0, grace=30)
        left = await store.list_sessions(tenant_id="default")
    assert report.errors.get("429", 0) > 0, report.errors
    assert report.sent == report.ok + sum(report.errors.values())
    assert report.anomalies == []
    refused = [op for op in report.ops if op.refused]
    assert refused and all(op.kind == "append" and not op.ok for op in refused)
    assert left.items == ()


class SlowAppends(MemoryStore):
    async def append(self, **kwargs: object) -> object:  # type: ignore[override]
        await asyncio.sleep(5)
        return await super().append(**kwargs)  # type: ignore[arg-type]


async def test_requests_still_running_after_grace_are_counted_as_unfinished() -> None:
    store = SlowAppends()
    config = ServerConfig(dev_mode=True, rate_per_second=10_000, rate_burst=10_000)
    app = create_app(config, store=store)
    async with live_server(app) as live:
        report = await run_load(live.base_url, sessions=2, rate=20, duration=0.5, grace=0.3)
    assert report.errors.get("unfinished", 0) > 0, report.errors
    assert report.sent == report.ok + sum(report.errors.values())
    assert report.anomalies == []


async def test_the_lean_client_in_a_closed_loop_is_consistent() -> None:
    store = MemoryStore()
    config = ServerConfig(dev_mode=True, rate_per_second=10_000, rate_burst=10_000)
    app = create_app(config, store=store)
    async with live_server(app) as live:
        report = await run_load(
            live.base_url, sessions=3, rate=0, duration=1.0, clients=4, raw=True
        )
    assert report.ok > 0 and report.sent == report.ok + sum(report.errors.values())
    assert report.anomalies == []
    assert {op.kind for op in report.ops if op.ok} == {"read", "append"}


class SlowerAppends(MemoryStore):
    async def append(self, **kwargs: object) -> object:  # type: ignore[override]
        await asyncio.sleep(0.25)
        return await super().append(**kwargs)  # type: ignore[arg-type]


async def test_refusals_are_counted_and_timed() -> None:
    """Two requests in flight at most, appends of 0.25 s each, 40 offered a second:
    at most 8 appends a second can be admitted, so some are refused on any machine."""
    config = ServerConfig(dev_mode=True, rate_per_second=10_000, rate_burst=10_000, max_in_flight=2)
    app = create_app(config, store=SlowerAppends())
    async with live_server(app) as live:
        report = await run_load(
            live.base_url, sessions=2, rate=40, duration=1.0, grace=30, raw=True
        )
    assert report.errors.get("503", 0) > 0, report.errors
    assert len(report.refused_ms) == report.errors["503"]
    assert report.percentile(0.99, refused=True) > 0
    assert report.sent == report.ok + sum(report.errors.values())
    assert report.anomalies == []
