"""SIGKILL the Redis server while clients append, restart it on the same files, and count
what was acknowledged but is gone.

* ``appendfsync always``: nothing acknowledged is ever lost.
* ``appendfsync everysec``: a loss, if any, is only of appends acknowledged in the last
  second or so before the crash (a process kill usually loses nothing: the data is already
  in the OS page cache; the window is about power loss or a kernel crash).
* no AOF, no snapshots: everything is lost, as the start-up warning says.
* Redis Cluster with AOF ``always``: kill a master mid-run and restart it; every
  acknowledged append survives and the client finds the node again by itself.

Each test runs private servers on free loopback ports and stops them even on failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chatstate.errors import ChatstateError
from chatstate.model import NewEvent
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends_redis import LocalCluster, LocalRedis, require_redis_server

T = "acme"
SESSIONS = [f"s{i}" for i in range(12)]


@dataclass(frozen=True)
class Ack:
    session: str
    text: str
    seq: int
    at: float


class Workload:
    """Writers appending one event at a time to a few sessions, recording every ack."""

    def __init__(self, store: Any, writers: int = 8) -> None:
        self.store = store
        self.writers = writers
        self.acks: list[Ack] = []
        self.failures = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _writer(self, index: int) -> None:
        count = 0
        while not self._stop.is_set():
            session = SESSIONS[(index + count) % len(SESSIONS)]
            text = f"w{index}-{count}"
            count += 1
            try:
                result = await self.store.append(
                    tenant_id=T, session_id=session, events=[NewEvent.message("user", text)]
                )
            except ChatstateError:  # not acknowledged: allowed to be missing
                self.failures += 1
                await asyncio.sleep(0.02)
                continue
            self.acks.append(Ack(session, text, result.first_seq, time.monotonic()))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._writer(i)) for i in range(self.writers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def lost(self) -> list[Ack]:
        """Acknowledged appends that are not in the log now (by content and position)."""
        present: dict[str, dict[str, int]] = {}
        for session in SESSIONS:
            try:
                events = await self.store.read(tenant_id=T, session_id=session, limit=10_000)
            except ChatstateError:
                events = []
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(events) + 1))  # dense, in order
            texts = [str(e.content) for e in events]
            assert len(texts) == len(set(texts)), "an append shows twice"
            present[session] = {text: e.seq for text, e in zip(texts, events, strict=True)}
        return [a for a in self.acks if present[a.session].get(a.text) is None]


async def _retry(call: Any, attempts: int = 50) -> Any:
    for _ in range(attempts):
        try:
            return await call()
        except ChatstateError:
            await asyncio.sleep(0.1)
    return await call()


async def _crash_run(store: Any, kill: Any, restart: Any) -> tuple[Workload, float]:
    for session in SESSIONS:
        await store.create_session(tenant_id=T, session_id=session)
    work = Workload(store)
    work.start()
    try:
        await asyncio.sleep(0.8)
        killed_at = time.monotonic()
        kill()
        await asyncio.sleep(0.3)
        await asyncio.to_thread(restart)
        await asyncio.sleep(0.8)
    finally:
        await work.stop()
    return work, killed_at


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_sigkill_redis_server(tmp_path: Path, fsync: str) -> None:
    require_redis_server()
    from chatstate.store.redis import open_redis_url

    server = LocalRedis(tmp_path / "redis", args=["--appendonly", "yes", "--appendfsync", fsync])
    server.start()
    try:
        store = await open_redis_url(server.url, StoreConfig())
        try:
            assert store.capabilities.durable == (fsync == "always")
            work, killed_at = await _crash_run(store, server.kill, server.start)
            lost = await _retry(work.lost)
        finally:
            await store.close()
    finally:
        server.stop()
    before = [a for a in work.acks if a.at < killed_at]
    after = [a for a in work.acks if a.at > killed_at]
    assert len(before) > 200 and after, (len(before), len(after))  # it ran, and it healed
    if fsync == "always":
        assert lost == [], f"{len(lost)} acknowledged appends lost"
    else:
        # The documented window: about one second before the crash (margin for CI).
        assert all(a.at > killed_at - 2.0 for a in lost), [a.at - killed_at for a in lost]
        assert len(lost) < len(before) / 2


async def test_no_persistence_loses_everything_as_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis_server()
    from chatstate.store.redis import open_redis_url

    server = LocalRedis(tmp_path / "redis", args=["--appendonly", "no"])
    server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="chatstate.store.redis"):
            store = await open_redis_url(server.url, StoreConfig())
        assert any("everything" in r.getMessage() for r in caplog.records)
        try:
            for session in SESSIONS:
                await store.create_session(tenant_id=T, session_id=session)
            work = Workload(store, writers=2)
            work.start()
            await asyncio.sleep(0.3)
            await work.stop()
            server.kill()
            server.start()
            lost = await _retry(work.lost)
        finally:
            await store.close()
    finally:
        server.stop()
    assert work.acks and len(lost) == len(work.acks)


async def test_kill_a_cluster_master_with_aof_always(tmp_path: Path) -> None:
    require_redis_server()
    from redis.crc import key_slot

    from chatstate.store.redis import open_redis_url

    cluster = LocalCluster(
        tmp_path / "cluster", args=["--appendonly", "yes", "--appendfsync", "always"]
    )
    cluster.start()
    try:
        store = await open_redis_url(cluster.url, StoreConfig())
        try:
            assert store.capabilities.durable
            victim = cluster.nodes[0]
            work, killed_at = await _crash_run(store, victim.kill, lambda: cluster.restart(0))
            lost = await _retry(work.lost)
            # Sessions whose slot lives on the killed master took writes again afterwards.
            owned = {
                s
                for s in SESSIONS
                if _owner(cluster, key_slot(store._keys.session(T, s)[0].encode())) == victim.port
            }
        finally:
            await store.close()
    finally:
        cluster.stop()
    assert owned, "no session lived on the killed master"
    assert lost == [], f"{len(lost)} acknowledged appends lost"
    healed = [a for a in work.acks if a.at > killed_at and a.session in owned]
    assert healed, "the client did not find the restarted master by itself"
    assert work.failures > 0  # the outage was real


def _owner(cluster: LocalCluster, slot: int) -> int:
    """The port of the master that serves ``slot`` (from ``CLUSTER NODES``)."""
    out = cluster.nodes[1].cli("cluster", "nodes")
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 9 or "master" not in fields[2]:
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for span in fields[8:]:
            lo, _, hi = span.partition("-")
            if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                return port
    raise AssertionError(f"no master serves slot {slot}")
