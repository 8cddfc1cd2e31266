"""A fleet of workers is one service for rate limits: with ``redis_url`` every worker and
instance draws from one bucket per key (two apps in one process stand for two workers)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from chatstate.server import ServerConfig
from chatstate.store import MemoryStore
from chatstate.testing.backends_redis import redis_url, require
from test_server_support import Api, api

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


async def test_two_workers_share_one_bucket_per_key() -> None:
    require("redis")
    async with _two_workers(redis_url()) as (one, two):
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
