"""Redis Cluster: one slot per session, sessions spread over the masters, and a slot
moved to another master while clients append. The contract itself:
``CHATSTATE_BACKENDS=redis-cluster`` conformance, on a real local 3-master cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatstate.errors import ChatstateError
from chatstate.model import NewEvent
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends_redis import LocalCluster, require, require_redis_server

T = "acme"


def msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    spec = require("redis-cluster")
    async with spec.open(StoreConfig(), tmp_path) as opened:
        yield opened


async def _slot_owners(client: Any) -> dict[int, str]:
    """slot -> "host:port" of its master."""
    owners: dict[int, str] = {}
    reply = await client.execute_command("CLUSTER SLOTS", target_nodes=client.get_random_node())
    for (lo, hi), info in reply.items():  # redis-py's parse_cluster_slots
        host, port = info["primary"][:2]
        for slot in range(int(lo), int(hi) + 1):
            owners[slot] = f"{host}:{port}"
    return owners


async def test_a_session_lives_in_one_slot_and_sessions_spread(store: Any) -> None:
    from redis.crc import key_slot

    for i in range(30):
        sid = f"s{i}"
        await store.create_session(tenant_id=T, session_id=sid, ttl_seconds=600)
        await store.append(tenant_id=T, session_id=sid, events=[msg("x")], idempotency_key="k")
        await store.fork(tenant_id=T, session_id=sid, new_branch="b")
        await store.put_state(tenant_id=T, session_id=sid, data={"i": i}, expected_version=0)
    owners = await _slot_owners(store.client)
    masters = set()
    for i in range(30):
        slots = {key_slot(k.encode()) for k in store._keys.session(T, f"s{i}")}
        assert len(slots) == 1
        masters.add(owners[slots.pop()])
    assert len(masters) == 3  # the sessions spread over every master
    # The listing index lives in its own slot and still sees every session.
    page = await store.list_sessions(tenant_id=T, limit=100)
    assert len(page.items) == 30
    assert await store.delete_sessions(tenant_id=T) == 30
    assert (await store.list_sessions(tenant_id=T)).items == ()


async def test_moving_a_slot_while_appending_keeps_every_ack(tmp_path: Path) -> None:
    """Migrate the slot of a busy session to another master (CLUSTER SETSLOT + MIGRATE)
    while writers append to it: every acknowledged append is there afterwards, in order,
    and the client follows the slot to its new master by itself."""
    require_redis_server()
    from redis.crc import key_slot

    from chatstate.store.redis import open_redis_url

    cluster = LocalCluster(tmp_path / "cluster")
    cluster.start()
    try:
        store = await open_redis_url(cluster.url, StoreConfig())
        try:
            await _migrate_under_load(store, cluster, key_slot)
        finally:
            await store.close()
    finally:
        cluster.stop()


async def _migrate_under_load(store: Any, cluster: LocalCluster, key_slot: Any) -> None:
    await store.create_session(tenant_id=T, session_id="busy")
    slot = key_slot(store._keys.session(T, "busy")[0].encode())
    owners = await _slot_owners(store.client)
    by_port = {f"127.0.0.1:{n.port}": n for n in cluster.nodes}
    source = by_port[owners[slot]]
    target = next(n for n in cluster.nodes if n is not source)
    ids = {n.port: n.cli("cluster", "myid").strip() for n in cluster.nodes}

    acks: list[tuple[int, str, float]] = []
    stop = asyncio.Event()

    async def writer(index: int) -> None:
        count = 0
        while not stop.is_set():
            text = f"w{index}-{count}"
            count += 1
            try:
                result = await store.append(tenant_id=T, session_id="busy", events=[msg(text)])
            except ChatstateError:
                await asyncio.sleep(0.01)
                continue
            acks.append((result.first_seq, text, time.monotonic()))

    def migrate() -> None:
        assert "OK" in target.cli("cluster", "setslot", str(slot), "importing", ids[source.port])
        assert "OK" in source.cli("cluster", "setslot", str(slot), "migrating", ids[target.port])
        while keys := source.cli("cluster", "getkeysinslot", str(slot), "100").split():
            out = source.cli(
                "migrate", "127.0.0.1", str(target.port), "", "0", "5000", "keys", *keys
            )
            assert "OK" in out or "NOKEY" in out, out
        for node in cluster.nodes:
            assert "OK" in node.cli("cluster", "setslot", str(slot), "node", ids[target.port])

    tasks = [asyncio.create_task(writer(i)) for i in range(4)]
    try:
        await asyncio.sleep(0.5)
        moved_at = time.monotonic()
        await asyncio.to_thread(migrate)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert (await _slot_owners(store.client))[slot] == f"127.0.0.1:{target.port}"
    events = await store.read(tenant_id=T, session_id="busy", limit=10_000)
    log = {e.seq: e.content for e in events}
    assert sorted(log) == list(range(1, len(events) + 1))
    assert all(log.get(seq) == text for seq, text, _ in acks), "an acknowledged append moved"
    assert any(at > moved_at + 0.1 for _, _, at in acks), "no append after the move"
    assert source.cli("cluster", "countkeysinslot", str(slot)).strip() == "0"


async def test_an_unreachable_cluster_is_a_typed_error() -> None:
    require_redis_server()
    from chatstate.errors import BackendUnavailable
    from chatstate.store.redis import open_redis_url
    from chatstate.testing.backends_redis import free_port

    with pytest.raises(BackendUnavailable):
        await open_redis_url(f"redis+cluster://127.0.0.1:{free_port()}", StoreConfig())
