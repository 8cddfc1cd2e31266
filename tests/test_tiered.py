"""The Redis hot tier in front of a system of record (SQLite by default, see
``CHATSTATE_TIERED_SOR``): it serves recent windows, never a stale one, and survives the
cache going away. The contract itself: ``CHATSTATE_BACKENDS=tiered`` conformance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from chatstate.errors import ChatstateError, SessionNotFound
from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends_redis import (
    LocalRedis,
    drop_prefix,
    free_port,
    redis_url,
    require,
    require_redis_server,
)

T, OTHER = "acme", "globex"


def msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


class Counting:
    """The system of record, counting the reads that reach it."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("read", "read_last"):
            self.reads += 1
        return getattr(self.inner, name)


@asynccontextmanager
async def tiers(
    tmp_path: Path, count: int = 2, *, url: str | None = None, **options: Any
) -> AsyncIterator[tuple[Counting, list[Any]]]:
    """``count`` TieredStores (each with its own Redis client, as separate processes would
    have) over one system of record and one cache."""
    require("tiered")
    from chatstate.store.redis import connect_client
    from chatstate.store.tiered import TieredStore
    from chatstate.testing.backends_redis import _sor_spec

    prefix = f"cst{uuid.uuid4().hex[:12]}"
    async with _sor_spec().open(StoreConfig(), tmp_path) as sor:
        counting = Counting(sor)
        stores = []
        for _ in range(count):
            client, _ = connect_client(url or redis_url(), socket_timeout=0.5, connect_timeout=0.5)
            stores.append(
                TieredStore(counting, client, prefix=prefix, owns_store=False, **options)  # type: ignore[arg-type]
            )
        try:
            yield counting, stores
        finally:
            client, _ = connect_client(url or redis_url())
            with contextlib.suppress(RedisError, OSError):  # a test may leave it down
                await drop_prefix(client, prefix)
            await client.aclose()
            for store in stores:
                await store.close()


async def test_reads_after_an_append_come_from_the_cache(tmp_path: Path) -> None:
    async with tiers(tmp_path, 1) as (sor, [tier]):
        await tier.create_session(tenant_id=T, session_id="s")
        await tier.append(tenant_id=T, session_id="s", events=[msg(f"m{i}") for i in range(30)])
        await tier.read_last(tenant_id=T, session_id="s", n=20)  # first read fills
        sor.reads = 0
        for turn in range(20):
            result = await tier.append(
                tenant_id=T, session_id="s", events=[msg(f"u{turn}"), msg(f"a{turn}")]
            )
            last = await tier.read_last(tenant_id=T, session_id="s", n=20)
            assert [e.seq for e in last] == list(range(result.last_seq - 19, result.last_seq + 1))
            tail = await tier.read(tenant_id=T, session_id="s", after_seq=result.first_seq - 1)
            assert [e.content for e in tail] == [f"u{turn}", f"a{turn}"]
            assert last == await sor.inner.read_last(tenant_id=T, session_id="s", n=20)
        assert sor.reads == 0
        # Older history than the window goes to the system of record.
        old = await tier.read(tenant_id=T, session_id="s", limit=5)
        assert [e.content for e in old] == ["m0", "m1", "m2", "m3", "m4"]
        assert sor.reads == 1


async def test_two_instances_never_serve_a_stale_window(tmp_path: Path) -> None:
    """Random writes through one instance, reads through the other, compared with the
    system of record after every step: forks, deletes and TTL changes included."""
    rng = random.Random(11)
    async with tiers(tmp_path, 2) as (sor, pair):
        truth = sor.inner
        alive = {"s1": False, "s2": False}
        for step in range(400):
            writer, reader = rng.sample(pair, 2)
            session = rng.choice(sorted(alive))
            if not alive[session]:
                await writer.create_session(tenant_id=T, session_id=session)
                alive[session] = True
                continue
            roll = rng.random()
            if roll < 0.6:
                branches = [
                    b.name for b in await truth.list_branches(tenant_id=T, session_id=session)
                ]
                await writer.append(
                    tenant_id=T,
                    session_id=session,
                    branch=rng.choice(branches),
                    events=[msg(f"{step}-{i}") for i in range(rng.randint(1, 3))],
                )
            elif roll < 0.7:
                name = f"b{step}"
                await writer.fork(tenant_id=T, session_id=session, new_branch=name)
            elif roll < 0.75:
                await writer.delete_session(tenant_id=T, session_id=session)
                alive[session] = False
                continue
            elif roll < 0.8:
                await writer.set_ttl(tenant_id=T, session_id=session, ttl_seconds=3600)
            for branch in await truth.list_branches(tenant_id=T, session_id=session):
                n = rng.choice((1, 5, 20, 60))
                got = await reader.read_last(
                    tenant_id=T, session_id=session, branch=branch.name, n=n
                )
                want = await truth.read_last(
                    tenant_id=T, session_id=session, branch=branch.name, n=n
                )
                assert got == want, (step, branch.name)
                after = max(0, branch.head_seq - rng.randint(0, 8))
                got = await reader.read(
                    tenant_id=T, session_id=session, branch=branch.name, after_seq=after
                )
                want = await truth.read(
                    tenant_id=T, session_id=session, branch=branch.name, after_seq=after
                )
                assert got == want, (step, branch.name, after)


async def test_concurrent_instances_see_every_acknowledged_append(tmp_path: Path) -> None:
    """Writers and readers on two instances at once: a read that starts after an append was
    acknowledged shows it, and every event read is the one the final log holds."""
    rng = random.Random(5)
    sessions = ["c1", "c2", "c3"]
    async with tiers(tmp_path, 2) as (sor, pair):
        for session in sessions:
            await pair[0].create_session(tenant_id=T, session_id=session)
        acked = dict.fromkeys(sessions, 0)
        seen: list[Any] = []
        stop = time.monotonic() + 2.0

        async def writer(index: int) -> None:
            count = 0
            while time.monotonic() < stop:
                session = rng.choice(sessions)
                result = await pair[index % 2].append(
                    tenant_id=T, session_id=session, events=[msg(f"w{index}-{count}")]
                )
                acked[session] = max(acked[session], result.last_seq)
                count += 1

        async def reader(index: int) -> None:
            while time.monotonic() < stop:
                session = rng.choice(sessions)
                floor = acked[session]
                events = await pair[index % 2].read_last(tenant_id=T, session_id=session, n=10)
                head = events[-1].seq if events else 0
                assert head >= floor, (session, head, floor)
                seen.extend((session, e.seq, e.content) for e in events)
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(i) for i in range(4)), *(reader(i) for i in range(4)))
        final = {
            s: {
                e.seq: e.content
                for e in await sor.inner.read(tenant_id=T, session_id=s, limit=10_000)
            }
            for s in sessions
        }
        assert seen
        assert all(final[s][seq] == content for s, seq, content in seen)


async def test_a_failed_cache_update_waits_out_the_lease(tmp_path: Path) -> None:
    """If B cannot tell Redis about its append, B returns only once A's cached window
    (which lacks the append) can no longer be served."""
    from redis.exceptions import TimeoutError as RedisTimeout

    async with tiers(tmp_path, 2, lease_seconds=0.4) as (_sor, (a, b)):
        await a.create_session(tenant_id=T, session_id="s")
        await a.append(tenant_id=T, session_id="s", events=[msg("one")])
        assert [e.content for e in await a.read_last(tenant_id=T, session_id="s", n=5)] == ["one"]

        async def broken(**_: Any) -> Any:
            raise RedisTimeout("simulated")

        b._scripts["TIER_ADVANCE"] = broken
        began = time.monotonic()
        await b.append(tenant_id=T, session_id="s", events=[msg("two")])
        assert time.monotonic() - began >= 0.35
        contents = [e.content for e in await a.read_last(tenant_id=T, session_id="s", n=5)]
        assert contents == ["one", "two"]


async def test_redis_outage_mid_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stop the cache mid-run: reads and writes go on (from the system of record, without
    waiting, since the cache server keeps nothing across a restart), then the cache
    comes back and is used again. Nothing acknowledged is lost."""
    require_redis_server()
    server = LocalRedis(tmp_path / "cache")
    server.start()
    try:
        from chatstate.store.redis import connect_client
        from chatstate.store.tiered import _cache_persists

        client, _ = connect_client(server.url)
        persists = await _cache_persists(client)
        await client.aclose()
        assert not persists
        async with tiers(tmp_path, 1, url=server.url, cache_persists=False) as (sor, [tier]):
            await tier.create_session(tenant_id=T, session_id="s")
            written: list[str] = []

            async def turns(count: int) -> float:
                worst = 0.0
                for _ in range(count):
                    began = time.monotonic()
                    text = f"t{len(written)}"
                    await tier.append(tenant_id=T, session_id="s", events=[msg(text)])
                    written.append(text)
                    last = await tier.read_last(tenant_id=T, session_id="s", n=3)
                    assert last[-1].content == text
                    worst = max(worst, time.monotonic() - began)
                return worst

            await turns(20)
            with caplog.at_level(logging.WARNING, logger="chatstate.store.tiered"):
                server.kill()
                assert await turns(40) < 1.0  # no lease waits: the cache is simply down
            assert any("unavailable" in r.getMessage() for r in caplog.records)
            server.start()
            await asyncio.sleep(1.1)  # reads try Redis again after a second
            await turns(20)
            sor.reads = 0
            await turns(5)
            assert sor.reads == 0  # served from the cache again
            everything = await sor.inner.read(tenant_id=T, session_id="s", limit=1000)
            assert [e.content for e in everything] == written
    finally:
        server.stop()


async def test_deleting_a_session_erases_its_cached_events(tmp_path: Path) -> None:
    async with tiers(tmp_path, 1) as (_sor, [tier]):
        await tier.create_session(tenant_id=T, session_id="s")
        await tier.append(tenant_id=T, session_id="s", events=[msg("canary 7f3a")])
        await tier.read_last(tenant_id=T, session_id="s", n=5)
        key = tier._key(T, "s")
        cached = await tier.client.hgetall(key)
        assert any("canary 7f3a" in v for v in cached.values())
        await tier.delete_session(tenant_id=T, session_id="s")
        left = await tier.client.hgetall(key)
        assert set(left) == {"t", "s", "gen"}  # the generation, no content
        assert 0 < await tier.client.pttl(key) <= 60_000


async def test_a_read_of_an_unknown_session_leaves_no_cache_key(tmp_path: Path) -> None:
    async with tiers(tmp_path, 1) as (_sor, [tier]):
        for _ in range(2):
            with pytest.raises(SessionNotFound):
                await tier.read_last(tenant_id=T, session_id="nobody", n=5)
        assert not await tier.client.exists(tier._key(T, "nobody"))
        assert tier.stats.erased == 0


async def test_a_write_made_around_the_tier_is_seen_at_once(tmp_path: Path) -> None:
    """Windows are confirmed by the system of record on every read, so an append made on
    it directly (no cache update, a lease of ten minutes) is never hidden."""
    async with tiers(tmp_path, 1, lease_seconds=600) as (sor, [tier]):
        await tier.create_session(tenant_id=T, session_id="s")
        await tier.append(tenant_id=T, session_id="s", events=[msg("one")])
        assert [e.content for e in await tier.read_last(tenant_id=T, session_id="s", n=5)] == [
            "one"
        ]
        await sor.inner.append(tenant_id=T, session_id="s", events=[msg("two")])
        contents = [e.content for e in await tier.read_last(tenant_id=T, session_id="s", n=5)]
        assert contents == ["one", "two"]
        assert tier.stats.stale == 1
        sor.reads = 0
        assert await tier.read_last(tenant_id=T, session_id="s", n=5) == await sor.inner.read_last(
            tenant_id=T, session_id="s", n=5
        )
        assert sor.reads == 0  # refilled, and served from the cache again


async def test_cache_entries_of_another_session_are_refused(tmp_path: Path) -> None:
    async with tiers(tmp_path, 1) as (_sor, [tier]):
        for tenant in (T, OTHER):
            await tier.create_session(tenant_id=tenant, session_id="s")
            await tier.append(tenant_id=tenant, session_id="s", events=[msg(f"{tenant} only")])
            await tier.read_last(tenant_id=tenant, session_id="s", n=5)
        mine = await tier.client.hgetall(tier._key(T, "s"))
        theirs = tier._key(OTHER, "s")
        await tier.client.hset(theirs, "e:main:1", mine["e:main:1"])
        with pytest.raises(ChatstateError) as caught:
            await tier.read_last(tenant_id=OTHER, session_id="s", n=5)
        assert "acme only" not in str(caught.value)
        await tier.client.hset(theirs, mapping={"t": T})
        with pytest.raises(ChatstateError):
            await tier.read(tenant_id=OTHER, session_id="s")


async def test_open_store_with_a_cache_url(tmp_path: Path) -> None:
    require("tiered")
    from chatstate.store.tiered import TieredStore
    from chatstate.store.url import open_store

    prefix = f"cst{uuid.uuid4().hex[:12]}"
    store = await open_store(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        cache_url=f"{redis_url()}?prefix={prefix}&window=10&lease=2",
    )
    try:
        assert isinstance(store, TieredStore)
        await store.create_session(tenant_id=T, session_id="s")
        await store.append(tenant_id=T, session_id="s", events=[msg("x")] * 15)
        assert len(await store.read_last(tenant_id=T, session_id="s", n=10)) == 10
        assert len(await store.read_last(tenant_id=T, session_id="s", n=12)) == 12
    finally:
        await drop_prefix(store.client, prefix)  # type: ignore[attr-defined]
        await store.close()


async def test_a_cache_that_is_down_at_start_is_not_an_error(tmp_path: Path) -> None:
    require_redis_server()
    from chatstate.store.tiered import TieredStore
    from chatstate.store.url import open_store

    port = free_port()
    store = await open_store(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        cache_url=f"redis://127.0.0.1:{port}/0?lease=0.5",
    )
    server = LocalRedis(tmp_path / "cache", port=port)
    try:
        assert isinstance(store, TieredStore)
        await store.create_session(tenant_id=T, session_id="s")
        began = time.monotonic()
        await store.append(tenant_id=T, session_id="s", events=[msg("x")])
        # Unknown server: it might keep stale windows across a restart, so the write
        # waits the lease out.
        assert time.monotonic() - began >= 0.4
        assert [e.content for e in await store.read(tenant_id=T, session_id="s")] == ["x"]
        server.start()
        await asyncio.sleep(1.1)  # reads try Redis again after a second
        await store.read(tenant_id=T, session_id="s")  # learns: this server keeps nothing
        server.kill()
        began = time.monotonic()
        await store.append(tenant_id=T, session_id="s", events=[msg("y")])
        assert time.monotonic() - began < 0.4  # refused, and nothing to come back: no wait
        contents = [e.content for e in await store.read(tenant_id=T, session_id="s")]
        assert contents == ["x", "y"]
    finally:
        server.stop()
        await store.close()


def test_an_unreadable_event_is_cached_as_it_is_stored() -> None:
    """A row the codec cannot read comes back from the cache unreadable, with its reason
    and raw body, not as the plain marker that stands in for it (which export and health
    would then not report)."""
    from datetime import UTC, datetime

    from chatstate.store.backends.redis.tier_window import decode_entry, encode_entry
    from chatstate.store.codec import decode_event

    stored = '{"v":99,"kind":"message","role":"user","content":"from the future"}'
    event = decode_event(
        stored,
        seq=3,
        branch="main",
        created_at=datetime(2026, 12, 2, tzinfo=UTC),
        token_count=None,
        idempotency_key=None,
    )
    assert event.unreadable == "unreadable"
    cached = decode_entry(encode_entry(StoreConfig().limits, T, "s", event), T, "s", 3)
    assert cached == event
    assert cached.unreadable == "unreadable" and cached.data["raw"] == stored
