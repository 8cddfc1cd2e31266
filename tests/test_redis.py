"""Redis as the store: key layout, owner checks, TTL hygiene, persistence report, scale,
and the March 2023 class of bug (cancelled requests on a shared pool).

The contract itself is checked by the conformance suite (``CHATSTATE_BACKENDS=redis``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatstate.errors import (
    BackendUnavailable,
    ChatstateError,
    SessionExpired,
    SessionNotFound,
    ValidationError,
)
from chatstate.model import NewEvent
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import FakeClock
from chatstate.testing.backends_redis import (
    LocalRedis,
    free_port,
    redis_url,
    require,
    require_redis_server,
)

T, OTHER = "acme", "globex"


def msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    spec = require("redis")
    async with spec.open(StoreConfig(), tmp_path) as opened:
        yield opened


async def _keys(store: Any) -> list[str]:
    return sorted([k async for k in store.client.scan_iter(match=f"{store.prefix}:*")])


async def test_session_keys_share_one_hash_tag(store: Any) -> None:
    from redis.crc import key_slot

    await store.create_session(tenant_id=T, session_id="s", ttl_seconds=600)
    await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    await store.fork(tenant_id=T, session_id="s", new_branch="b")
    await store.append(tenant_id=T, session_id="s", branch="b", events=[msg("b")])
    await store.put_state(tenant_id=T, session_id="s", data={"x": 1}, expected_version=0)
    keys = await _keys(store)
    session_keys = [k for k in keys if ":s:" in k]
    assert len(session_keys) == 7
    assert all("{acme:s}" in k for k in session_keys)
    assert len({key_slot(k.encode()) for k in session_keys}) == 1
    # The three indexes, each in its own slot.
    assert {k for k in keys if ":s:" not in k} == {
        f"{store.prefix}:t:{{acme}}:sessions",
        f"{store.prefix}:g:{{expiry}}",
        f"{store.prefix}:g:{{idempotency}}",
    }


async def test_no_pattern_commands_ever(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No KEYS or SCAN on any path, so no id can ever act as a pattern."""
    seen: list[str] = []
    original = store.client.execute_command

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(str(args[0]).upper())
        return await original(*args, **kwargs)

    monkeypatch.setattr(store.client, "execute_command", spy)
    clock_ids = ["a*", "b?"]
    for sid in ("s1", "s2"):
        await store.create_session(tenant_id=T, session_id=sid, ttl_seconds=60, user_id="u")
        await store.append(tenant_id=T, session_id=sid, events=[msg("x")], idempotency_key="k")
        await store.read(tenant_id=T, session_id=sid)
    await store.list_sessions(tenant_id=T, limit=1)
    await store.purge_expired()
    await store.delete_sessions(tenant_id=T, user_id="u")
    for bad in clock_ids:
        with pytest.raises(ValidationError):
            await store.get_session(tenant_id=T, session_id=bad)
    assert seen and not {"KEYS", "SCAN"} & set(seen)


async def test_another_tenants_records_are_refused(store: Any) -> None:
    """A record found under one tenant's key but written for another is never returned."""
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg("acme secret")])
    await store.put_state(tenant_id=T, session_id="s", data={"k": "acme"}, expected_version=0)
    await store.create_session(tenant_id=OTHER, session_id="s")
    await store.append(tenant_id=OTHER, session_id="s", events=[msg("globex")])
    mine = store._keys.session(T, "s")
    theirs = store._keys.session(OTHER, "s")
    client = store.client
    # Plant acme's event record and state under globex's keys (as a bug or a bad
    # restore might): globex must get an error, never acme's text.
    record = await client.hget(mine[3], "main:1")
    await client.hset(theirs[3], "main:1", record)
    with pytest.raises(ChatstateError) as caught:
        await store.read(tenant_id=OTHER, session_id="s")
    assert "acme secret" not in str(caught.value)
    await client.copy(mine[6], theirs[6], replace=True)
    with pytest.raises(ChatstateError):
        await store.get_state(tenant_id=OTHER, session_id="s")
    await client.copy(mine[0], theirs[0], replace=True)
    with pytest.raises(ChatstateError):
        await store.get_session(tenant_id=OTHER, session_id="s")
    with pytest.raises(ChatstateError):
        await store.append(tenant_id=OTHER, session_id="s", events=[msg("x")])
    # acme is untouched.
    events = await store.read(tenant_id=T, session_id="s")
    assert [e.content for e in events] == ["acme secret"]


async def test_every_key_of_a_session_with_ttl_has_a_ttl(store: Any) -> None:
    await store.create_session(tenant_id=T, session_id="s", ttl_seconds=3600)
    await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    await store.fork(tenant_id=T, session_id="s", new_branch="b")
    await store.put_state(tenant_id=T, session_id="s", data={"x": 1}, expected_version=0)
    keys = store._keys.session(T, "s")

    async def ttls() -> list[int]:
        return [int(await store.client.pttl(k)) for k in keys]

    assert all(t > 3_600_000 for t in await ttls())  # ttl + grace, every key
    await store.set_ttl(tenant_id=T, session_id="s", ttl_seconds=None)
    assert all(t == -1 for t in await ttls())
    await store.set_ttl(tenant_id=T, session_id="s", ttl_seconds=120)
    assert all(0 < t <= 120_000 + 600_000 for t in await ttls())
    await store.delete_session(tenant_id=T, session_id="s")
    assert [k for k in await _keys(store) if ":s:" in k] == []


async def test_redis_drops_expired_sessions_by_itself(tmp_path: Path) -> None:
    require("redis")
    from chatstate.store.redis import open_redis_url

    store = await open_redis_url(f"{redis_url()}?prefix=cstnative&ttl_grace=0", StoreConfig())
    try:
        assert store.capabilities.native_ttl
        await store.create_session(tenant_id=T, session_id="s", ttl_seconds=0.3)
        await store.append(tenant_id=T, session_id="s", events=[msg("short-lived")])
        await asyncio.sleep(0.6)
        with pytest.raises(SessionNotFound):
            await store.get_session(tenant_id=T, session_id="s")
        assert [k for k in await _keys(store) if ":s:" in k] == []
        assert (await store.list_sessions(tenant_id=T)).items == ()
    finally:
        from chatstate.testing.backends_redis import drop_prefix

        await drop_prefix(store.client, "cstnative")
        await store.close()


async def test_listing_skips_and_then_drops_dangling_entries(tmp_path: Path) -> None:
    spec = require("redis")
    clock = FakeClock()
    async with spec.open(StoreConfig(clock=clock), tmp_path) as store:
        store_any: Any = store
        for sid in ("a", "b", "c"):
            await store.create_session(tenant_id=T, session_id=sid)
        index = store_any._keys.tenant(T)
        # "b" lost its record (say, a delete whose index step never ran).
        await store_any.client.delete(store_any._keys.session(T, "b")[0])
        page = await store.list_sessions(tenant_id=T)
        assert [s.id for s in page.items] == ["c", "a"]
        assert await store_any.client.zcard(index) == 3  # young: might be a create in flight
        clock.advance(120)
        page = await store.list_sessions(tenant_id=T)
        assert [s.id for s in page.items] == ["c", "a"]
        assert await store_any.client.zcard(index) == 2


async def test_unreachable_server_is_a_typed_error_not_a_hang() -> None:
    require_redis_server()
    from chatstate.store.redis import open_redis_url

    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await open_redis_url(f"redis://:secret@127.0.0.1:{free_port()}/0", StoreConfig())
    assert time.monotonic() - started < 5
    assert "secret" not in str(caught.value)


async def test_a_stopped_server_gives_503_and_a_restart_heals(tmp_path: Path) -> None:
    require_redis_server()
    from chatstate.store.redis import open_redis_url

    server = LocalRedis(tmp_path / "r", args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    store = await open_redis_url(server.url, StoreConfig())
    try:
        assert store.capabilities.durable
        await store.create_session(tenant_id=T, session_id="s")
        await store.append(tenant_id=T, session_id="s", events=[msg("before")])
        server.kill()
        with pytest.raises(BackendUnavailable):
            await store.append(tenant_id=T, session_id="s", events=[msg("during")])
        with pytest.raises(BackendUnavailable):
            await store.read(tenant_id=T, session_id="s")
        server.start()
        # Reads retry once on a stale pooled connection; writes are never retried, so
        # the first write after a restart may still fail on a dead connection.
        assert [e.content for e in await store.read(tenant_id=T, session_id="s")] == ["before"]
        for _ in range(3):
            try:
                await store.append(tenant_id=T, session_id="s", events=[msg("after")])
                break
            except BackendUnavailable:
                continue
        contents = [e.content for e in await store.read(tenant_id=T, session_id="s")]
        assert contents == ["before", "after"]
    finally:
        await store.close()
        server.stop()


# -- the persistence report ------------------------------------------------------------------


def test_loss_windows() -> None:
    from chatstate.store.redis import describe_persistence

    assert describe_persistence("yes", "always", "") == (True, "none (appendfsync always)")
    durable, window = describe_persistence("yes", "everysec", "")
    assert not durable and "1 second" in window
    assert "snapshot" in describe_persistence("no", "everysec", "3600 1")[1]
    assert "everything" in describe_persistence("no", "everysec", "")[1]
    assert "unknown" in describe_persistence(None, None, None)[1]


async def test_start_logs_the_loss_window(caplog: pytest.LogCaptureFixture) -> None:
    require("redis")
    from chatstate.store.redis import open_redis_url

    with caplog.at_level(logging.INFO, logger="chatstate.store.redis"):
        store = await open_redis_url(f"{redis_url()}?prefix=cstlog", StoreConfig())
        await store.close()
    record = next(
        r for r in caplog.records if "can lose" in r.getMessage() or "survive" in r.getMessage()
    )
    if store.capabilities.durable:
        assert record.levelno == logging.INFO
    else:
        assert record.levelno == logging.WARNING
        assert store.loss_window in record.getMessage()


async def test_a_server_that_forbids_config_is_tolerated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis_server()
    from chatstate.store.redis import open_redis_url

    server = LocalRedis(tmp_path / "r", args=["--rename-command", "CONFIG", ""])
    server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="chatstate.store.redis"):
            store = await open_redis_url(server.url, StoreConfig())
        try:
            assert not store.capabilities.durable
            assert "unknown" in store.loss_window
            assert any("unknown" in r.getMessage() for r in caplog.records)
            await store.create_session(tenant_id=T, session_id="s")
        finally:
            await store.close()
    finally:
        server.stop()


def test_url_parameters() -> None:
    require("redis")
    from redis.asyncio.cluster import RedisCluster

    from chatstate.store.redis import RedisStore, connect_client

    client, ours = connect_client("redis+cluster://127.0.0.1:7000?prefix=app&socket_timeout=2")
    assert isinstance(client, RedisCluster)
    assert ours == {"prefix": "app"}
    with pytest.raises(ValidationError):
        RedisStore(client, prefix="a{b}")
    with pytest.raises(ValidationError):
        connect_client("http://127.0.0.1:6379")


# -- scale -------------------------------------------------------------------------------------


async def test_append_cost_is_flat_in_log_length(store: Any) -> None:
    """An append at 100,000 events costs what it costs at 1,000 (O(1) per event).

    The two are timed in turns, one append to each log per round, so that whatever else
    the machine does at the time weighs on both alike (timed one phase after the other,
    a busy minute during the second phase failed this test on a machine that was only
    busy)."""
    for session in ("small", "big"):
        await store.create_session(tenant_id=T, session_id=session)
    filler = [msg("filler text")] * 1000
    await store.append(tenant_id=T, session_id="small", events=filler)
    for _ in range(100):
        await store.append(tenant_id=T, session_id="big", events=filler)

    times: dict[str, list[float]] = {"small": [], "big": []}
    for i in range(150):
        for session in ("small", "big") if i % 2 else ("big", "small"):
            began = time.perf_counter()
            await store.append(tenant_id=T, session_id=session, events=[msg(f"turn {i}")])
            times[session].append(time.perf_counter() - began)
    small, large = statistics.median(times["small"]), statistics.median(times["big"])
    assert large < small * 1.5 + 0.0005, (small, large)
    last = await store.read_last(tenant_id=T, session_id="big", n=1)
    assert last[0].seq == 100_150


# -- cancellation: the March 2023 bug class ----------------------------------------------------


class DelayProxy:
    """A TCP proxy that delays every chunk a little, so cancels land mid-reply.

    ``hold()`` also lets a test stop every reply at the proxy until ``release()``: while held,
    ``held`` names the client connections that have a reply waiting, so the test knows, by
    what the proxy has seen rather than by a clock, that a request is in flight.
    """

    def __init__(self, upstream_port: int, seed: int) -> None:
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.gate: asyncio.Event | None = None
        self.held: set[int] = set()
        self._held_grew = asyncio.Event()
        self._next_id = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        self.gate = asyncio.Event()
        self.held = set()

    async def wait_held(self, n: int) -> None:
        """Until ``n`` connections have a reply held at the proxy."""
        while len(self.held) < n:
            self._held_grew.clear()
            await self._held_grew.wait()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.gate = None

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply_of: int | None
    ) -> None:
        try:
            while chunk := await reader.read(4096):
                gate = self.gate
                if reply_of is not None and gate is not None:
                    self.held.add(reply_of)
                    self._held_grew.set()
                    await gate.wait()
                await asyncio.sleep(self.rng.random() * 0.004)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_id += 1
        conn = self._next_id
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pump(reader, up_writer, None), self._pump(up_reader, writer, conn)
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def _owners(result: Any) -> set[str]:
    """The tenants whose data a read returned (every record carries its owner)."""
    if isinstance(result, list):
        return {str(e.content).split(":")[0] for e in result}
    if hasattr(result, "items"):  # a page of sessions
        return {str(s.metadata["owner"]) for s in result.items}
    if hasattr(result, "metadata"):
        return {str(result.metadata["owner"])}
    return {str(result.data["owner"])}


async def _random_read(store: Any, rng: random.Random) -> tuple[str, Any]:
    tenant, sid, kind = rng.choice((T, OTHER)), f"s{rng.randrange(5)}", rng.randrange(5)
    if kind == 0:
        return tenant, await store.read(tenant_id=tenant, session_id=sid)
    if kind == 1:
        return tenant, await store.read_last(tenant_id=tenant, session_id=sid, n=5)
    if kind == 2:
        return tenant, await store.get_session(tenant_id=tenant, session_id=sid)
    if kind == 3:
        return tenant, await store.get_state(tenant_id=tenant, session_id=sid)
    return tenant, await store.list_sessions(tenant_id=tenant, limit=3)


async def _cancel_in_flight(store: Any, proxy: DelayProxy, rng: random.Random) -> int:
    """One round, in flight by construction: replies are held at the proxy until every
    request has one waiting, half the requests are cancelled, then the replies flow. Each
    cancelled reply still arrives on its connection; none may reach another request."""
    proxy.hold()
    tasks = [asyncio.create_task(_random_read(store, rng)) for _ in range(40)]
    async with asyncio.timeout(60):
        await proxy.wait_held(len(tasks))
    doomed = set(rng.sample(range(len(tasks)), len(tasks) // 2))
    for i in doomed:
        tasks[i].cancel()
    proxy.release()
    for i, outcome in enumerate(await asyncio.gather(*tasks, return_exceptions=True)):
        if i in doomed:
            assert isinstance(outcome, asyncio.CancelledError), outcome
            continue
        assert not isinstance(outcome, BaseException), outcome
        tenant, result = outcome
        assert _owners(result) <= {tenant}, (tenant, result)
    return len(doomed)


async def _cancel_at_random(store: Any, rng: random.Random) -> None:
    """One round cancelled at random moments (before, during and after the reply): how many
    land mid-flight depends on the machine's speed, so only the results are checked."""
    tasks = [asyncio.create_task(_random_read(store, rng)) for _ in range(40)]
    loop = asyncio.get_running_loop()
    for task in tasks:
        if rng.random() < 0.5:
            loop.call_later(rng.random() * 0.008, task.cancel)
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, asyncio.CancelledError):
            continue
        assert not isinstance(outcome, BaseException), outcome
        tenant, result = outcome
        assert _owners(result) <= {tenant}, (tenant, result)


async def test_cancelled_requests_never_leak_another_tenants_data() -> None:
    """Reads from two tenants through a delaying proxy, 200 of them cancelled while their
    reply is in flight and more at random moments: no completed read carries the other
    tenant's data, and the pool stays clean. The count of in-flight cancellations follows
    from what the proxy holds, not from the machine's speed."""
    require("redis")
    from urllib.parse import urlsplit

    from chatstate.store.redis import open_redis_url
    from chatstate.testing.backends_redis import drop_prefix

    upstream = urlsplit(redis_url())
    proxy = DelayProxy(upstream.port or 6379, seed=2023)
    await proxy.start()
    prefix = f"cstcancel{uuid.uuid4().hex[:8]}"  # parallel runs share the server
    store = await open_redis_url(
        f"redis://127.0.0.1:{proxy.port}/{(upstream.path or '/0').lstrip('/') or 0}"
        f"?prefix={prefix}",
        StoreConfig(),
    )
    rng = random.Random(7)
    try:
        for tenant in (T, OTHER):
            for i in range(5):
                await store.create_session(
                    tenant_id=tenant, session_id=f"s{i}", metadata={"owner": tenant}
                )
                await store.append(
                    tenant_id=tenant,
                    session_id=f"s{i}",
                    events=[msg(f"{tenant}:{i}:{n}") for n in range(20)],
                )
                await store.put_state(
                    tenant_id=tenant, session_id=f"s{i}", data={"owner": tenant}, expected_version=0
                )
        cancelled = 0
        for _ in range(10):
            cancelled += await _cancel_in_flight(store, proxy, rng)
        assert cancelled == 200
        for _ in range(30):
            await _cancel_at_random(store, rng)
        # Every pooled connection is clean: sequential reads get exactly their own data.
        for _ in range(50):
            tenant = rng.choice((T, OTHER))
            events = await store.read(tenant_id=tenant, session_id="s0")
            assert [e.content for e in events] == [f"{tenant}:0:{n}" for n in range(20)]
    finally:
        await drop_prefix(store.client, prefix)
        await store.close()
        await proxy.stop()


async def test_expired_sessions_answer_410_until_purged(store: Any) -> None:
    # The conformance suite covers this with a fake clock; here on the real clock.
    await store.create_session(tenant_id=T, session_id="s", ttl_seconds=0.2)
    await asyncio.sleep(0.3)
    with pytest.raises(SessionExpired):
        await store.read(tenant_id=T, session_id="s")
    assert await store.purge_expired() == 1
    with pytest.raises(SessionNotFound):
        await store.read(tenant_id=T, session_id="s")


def test_the_test_kit_imports_without_redis_py(tmp_path: Path) -> None:
    """chatstate.testing must import (and say why Redis is skipped) without redis-py."""
    import subprocess
    import sys

    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'redis' or name.startswith('redis.'):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (
        "from chatstate.testing.backends import REGISTRY\n"
        "print(REGISTRY['redis'].unavailable())\n"
        "print(REGISTRY['redis-cluster'].unavailable())\n"
        "print(REGISTRY['tiered'].unavailable())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all("pip install 'chatstate[redis]'" in line for line in lines)


async def test_open_store_picks_the_redis_backend() -> None:
    require("redis")
    from chatstate.store.redis import RedisStore
    from chatstate.store.url import open_store
    from chatstate.testing.backends_redis import drop_prefix

    store = await open_store(f"{redis_url()}?prefix=cstopen")
    try:
        assert isinstance(store, RedisStore) and store.prefix == "cstopen"
        await store.create_session(tenant_id=T, session_id="s")
    finally:
        await drop_prefix(store.client, "cstopen")  # type: ignore[attr-defined]
        await store.close()


async def test_state_per_branch_keeps_main_in_the_old_fields(store: Any) -> None:
    """main's document is the state hash's fields as written before state was per branch
    (version, body, updated_us), so those documents still read; another branch's document
    lives beside it as version:<b>, body:<b>, updated_us:<b>, and goes with the session."""
    await store.create_session(tenant_id=T, session_id="s")
    nonce = await store.client.hget(f"{store.prefix}:s:{{{T}:s}}:m", "nonce")
    st = f"{store.prefix}:s:{{{T}:s}}:st"
    fields = {"tenant": T, "session": "s", "nonce": nonce, "version": "4"}
    await store.client.hset(st, mapping={**fields, "body": '{"plan":"gold"}', "updated_us": "1"})
    old = await store.get_state(tenant_id=T, session_id="s")
    assert (old.version, dict(old.data)) == (4, {"plan": "gold"})
    await store.fork(tenant_id=T, session_id="s", new_branch="alt")
    assert (await store.get_state(tenant_id=T, session_id="s", branch="alt")).version == 0
    await store.put_state(
        tenant_id=T, session_id="s", branch="alt", data={"plan": "alt"}, expected_version=0
    )
    stored = await store.client.hgetall(st)
    assert stored["version"] == "4" and stored["version:alt"] == "1"
    assert stored["body:alt"] == '{"plan":"alt"}'
    await store.delete_session(tenant_id=T, session_id="s")
    assert not await store.client.exists(st)
