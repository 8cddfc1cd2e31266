"""The open-loop load test against a live server on loopback: it stops by itself and
its history passes the consistency checker."""

from __future__ import annotations

from chatstate.bench.load import run_load
from chatstate.server import ServerConfig, create_app
from chatstate.store.memory import MemoryStore
from test_server_support import live_server


async def test_load_smoke_is_consistent() -> None:
    store = MemoryStore()
    config = ServerConfig(dev_mode=True, rate_per_second=10_000, rate_burst=10_000)
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
