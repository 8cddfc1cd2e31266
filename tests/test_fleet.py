"""A fleet of workers is one service for rate limits: with ``redis_url`` every worker and
instance draws from one bucket per key (two apps in one process stand for two workers)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatstate.bench.load import run_load
from chatstate.server import ServerConfig
from chatstate.store import MemoryStore
from chatstate.testing.backends_redis import redis_url, require
from test_server_support import Api, ServerProcess, api

BURST = 5


@contextlib.asynccontextmanager
async def _two_workers(url: str) -> AsyncIterator[tuple[Api, Api]]:
    store = MemoryStore()  # the keys both workers resolve
    config = ServerConfig(
        dev_mode=False,
        key_cache_seconds=0,
        redis_url=url,
        rate_per_second=0.01,  # no refill within the test, whatever the machine's speed
        rate_burst=BURST,
    )
    async with api(config, store) as one, api(config, store) as two:
        yield one, two


@pytest.fixture
async def fleet_url() -> AsyncIterator[str]:
    """The test Redis with a prefix of this test's own; its keys are dropped after."""
    require("redis")
    from chatstate.store.redis import connect_client
    from chatstate.testing.backends_redis import drop_prefix

    prefix = f"csfleet{uuid.uuid4().hex[:8]}"
    yield f"{redis_url()}?prefix={prefix}"
    client, _ = connect_client(redis_url())
    await drop_prefix(client, prefix)
    await client.aclose()


async def test_two_workers_share_one_bucket_per_key(fleet_url: str) -> None:
    async with _two_workers(fleet_url) as (one, two):
        key = await one.key("acme")
        other = await one.key("globex")
        codes = [
            (await (one if i % 2 else two).client.get("/v1/sessions", headers=key)).status_code
            for i in range(2 * BURST)
        ]
        assert codes == [200] * BURST + [429] * BURST
        limited = await one.client.get("/v1/sessions", headers=key)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another key has its own bucket.
        assert (await two.client.get("/v1/sessions", headers=other)).status_code == 200


async def test_metrics_are_the_sum_over_workers(fleet_url: str) -> None:
    async with _two_workers(fleet_url) as (one, two):
        key = await one.key("acme")
        for n, worker in ((3, one), (2, two)):
            for _ in range(n):
                assert (await worker.client.get("/v1/sessions", headers=key)).status_code == 200
        line = 'chatstate_http_requests_total{method="GET",route="/v1/sessions",status="200"} 5'
        # Each worker publishes every 2 s and on each scrape: poll with a generous guard.
        for _ in range(300):
            scrapes = [(await w.client.get("/metrics")).text for w in (one, two)]
            if all(line in text for text in scrapes):
                break
            await asyncio.sleep(0.1)
        assert all(line in text for text in scrapes), scrapes[0][:2000]


async def test_without_redis_each_worker_falls_back_to_its_own_bucket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _two_workers("redis://127.0.0.1:1/0") as (one, two):
        key = await one.key("acme")
        codes = [
            (await (one if i % 2 else two).client.get("/v1/sessions", headers=key)).status_code
            for i in range(2 * BURST + 2)
        ]
        assert codes.count(200) == 2 * BURST and codes[-2:] == [429, 429]
    assert "limiting per worker" in caplog.text


async def test_serve_with_two_workers_on_postgres_and_redis_passes_the_history_check(
    tmp_path: Path,
) -> None:
    """``chatstate serve --workers 2`` (CHATSTATE_WORKERS) on PostgreSQL with the Redis
    tier, driven open-loop by ``bench load``: every request accounted for, 0 anomalies."""
    require("postgres")
    require("tiered")
    from chatstate.store.redis import connect_client
    from chatstate.testing.backends_postgres import create_schema, drop_schema, server_url
    from chatstate.testing.backends_redis import drop_prefix

    schema = await create_schema()
    prefix = f"csfleet{uuid.uuid4().hex[:8]}"
    env = {
        "CHATSTATE_WORKERS": "2",
        "CHATSTATE_REDIS_URL": f"{redis_url()}?prefix={prefix}",
        "CHATSTATE_RATE_PER_SECOND": "100000",
        "CHATSTATE_RATE_BURST": "100000",
    }
    try:
        server = await asyncio.to_thread(
            ServerProcess,
            f"{server_url()}?schema={schema}",
            "http://127.0.0.1:1/v1",
            tmp_path / "serve.log",
            **env,
        )
        try:
            report = await run_load(server.base_url, sessions=5, rate=30, duration=4.0, grace=60)
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await drop_schema(schema)
        client, _ = connect_client(redis_url())
        await drop_prefix(client, prefix)
        await client.aclose()
    assert report.sent == report.ok + sum(report.errors.values())
    assert report.ok > 0 and report.anomalies == [], (report.errors, report.anomalies[:3])
