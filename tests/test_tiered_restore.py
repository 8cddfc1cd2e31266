"""Case 15 and the Redis tier: a cache Redis restored from an older snapshot is never
served. Its windows are checked against the system of record (SQLite, and PostgreSQL
under the same test), discarded and refilled; a deleted session stays deleted and its
restored entries are erased.

The scenario, on a private ``redis-server``: fill the cache through the tier, ``BGSAVE``,
then append to every session, fork, delete one session and re-create another under the
same id with as many events as before, stop the server without saving, put the old
``dump.rdb`` back, start it again, and read every branch through the tier in every way a
reader pages. The lease is set to ten minutes so that, without the check, every restored
window would still be served: the test does not depend on how fast the restart is.

Under load (the probe's scenario): two tiers append and read while the cache is
snapshotted and restored three times; no read misses an append acknowledged before it
began. Before the check, this failed within the first restore.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from chatstate.errors import SessionNotFound
from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends_redis import LocalRedis, _sor_spec, require, require_redis_server

T = "acme"
KEPT = [f"s{i}" for i in range(6)]
DOOMED = "doomed"  # deleted after the snapshot
REBORN = "reborn"  # deleted and re-created after the snapshot, as many events as before
WINDOW = 8
PAGES = [(n, None) for n in (1, 3, WINDOW, WINDOW + 4)] + [(None, k) for k in (0, 1, 5, 12)]


def msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


async def _bgsave(server: LocalRedis) -> Path:
    """``BGSAVE`` and wait until it has finished (writes may go on meanwhile); returns a
    copy of the dump."""
    assert "Background saving started" in await asyncio.to_thread(server.cli, "BGSAVE")
    async with asyncio.timeout(60):  # hang guard only
        while True:
            info = await asyncio.to_thread(server.cli, "INFO", "persistence")
            if "rdb_bgsave_in_progress:0" in info:
                break
            await asyncio.sleep(0.05)
    assert "rdb_last_bgsave_status:ok" in info
    copy = server.folder.parent / "snapshot.rdb"
    shutil.copyfile(server.folder / "dump.rdb", copy)
    return copy


def _tier(sor: Any, url: str, prefix: str, lease: float = 600) -> Any:
    from chatstate.store.backends.redis.conn import connect_client
    from chatstate.store.backends.redis.tiered import TieredStore

    client, _ = connect_client(url, socket_timeout=2, connect_timeout=2)
    return TieredStore(
        sor, client, prefix=prefix, window=WINDOW, lease_seconds=lease, owns_store=False
    )


async def _fill(tier: Any, sessions: list[str]) -> None:
    """Read every branch so that each has a cached window."""
    for session in sessions:
        for branch in await tier.list_branches(tenant_id=T, session_id=session):
            await tier.read_last(tenant_id=T, session_id=session, branch=branch.name, n=WINDOW)


async def _compare_all(tier: Any, truth: Store, sessions: list[str]) -> int:
    """Read every branch of every session through the tier in every page shape and
    compare with the system of record; returns the number of reads compared."""
    checked = 0
    for session in sessions:
        for branch in await truth.list_branches(tenant_id=T, session_id=session):
            where = {"tenant_id": T, "session_id": session, "branch": branch.name}
            for n, back in PAGES:
                if n is not None:
                    got = await tier.read_last(**where, n=n)
                    want = await truth.read_last(**where, n=n)
                else:
                    after = max(0, branch.head_seq - (back or 0))
                    got = await tier.read(**where, after_seq=after)
                    want = await truth.read(**where, after_seq=after)
                assert got == want, (session, branch.name, n, back)
                checked += 1
            got = await tier.read(**where, order="desc", limit=4)
            assert got == await truth.read(**where, order="desc", limit=4), (session, branch)
            checked += 1
    return checked


async def _before_snapshot(tier: Any) -> None:
    """Sessions with a few events, every other one with a fork; every window cached."""
    for i, session in enumerate([*KEPT, DOOMED, REBORN]):
        await tier.create_session(tenant_id=T, session_id=session)
        events = [msg(f"{session} old {j}") for j in range(3 + 2 * i)]
        await tier.append(tenant_id=T, session_id=session, events=events)
        if i % 2 == 0:
            await tier.fork(tenant_id=T, session_id=session, new_branch="side")
            await tier.append(tenant_id=T, session_id=session, branch="side", events=[msg("x")])
    await _fill(tier, [*KEPT, DOOMED, REBORN])


async def _after_snapshot(tier: Any) -> None:
    """Appends to every branch, a fork, a delete, and a re-creation under the same id
    with as many events as the old session had (so only the validator tells them apart)."""
    for i, session in enumerate(KEPT):
        for branch in await tier.list_branches(tenant_id=T, session_id=session):
            await tier.append(
                tenant_id=T,
                session_id=session,
                branch=branch.name,
                events=[msg(f"{session} new {k}") for k in range(1 + i % 3)],
            )
    await tier.fork(tenant_id=T, session_id=KEPT[1], new_branch="late", at_seq=2)
    await tier.delete_session(tenant_id=T, session_id=DOOMED)
    old = await tier.list_branches(tenant_id=T, session_id=REBORN)
    await tier.delete_session(tenant_id=T, session_id=REBORN)
    await tier.create_session(tenant_id=T, session_id=REBORN)
    count = next(b.head_seq for b in old if b.name == "main")
    events = [msg(f"reborn {j}") for j in range(count)]
    await tier.append(tenant_id=T, session_id=REBORN, events=events)
    await _fill(tier, [*KEPT, REBORN])  # the live cache is current before the restore


def _restore(server: LocalRedis, snapshot: Path) -> None:
    """Stop the cache without saving, put the old snapshot back, start it again."""
    server.cli("SHUTDOWN", "NOSAVE")
    server.stop()
    shutil.copyfile(snapshot, server.folder / "dump.rdb")
    server.start()


async def _the_deleted_session_stays_deleted(tier: Any) -> int:
    key = tier._key(T, DOOMED)
    assert any(f.startswith("e:") for f in await tier.client.hgetall(key))  # it is back
    with pytest.raises(SessionNotFound):
        await tier.read_last(tenant_id=T, session_id=DOOMED, n=5)
    with pytest.raises(SessionNotFound):
        await tier.read(tenant_id=T, session_id=DOOMED, after_seq=1)
    left = await tier.client.hgetall(key)
    assert set(left) <= {"t", "s", "gen"}, left  # erased: no window, no event
    assert tier.stats.erased >= 1
    return 2


@pytest.mark.parametrize("sor_name", ["sqlite", "postgres"])
async def test_a_cache_restored_from_an_old_snapshot_is_never_served(
    tmp_path: Path, sor_name: str
) -> None:
    require_redis_server()
    require(sor_name)
    server = LocalRedis(tmp_path / "cache")
    server.start()
    prefix = f"cst{uuid.uuid4().hex[:12]}"
    try:
        async with _sor_spec(sor_name).open(StoreConfig(), tmp_path) as sor:
            tier = _tier(sor, server.url, prefix)
            try:
                await _before_snapshot(tier)
                snapshot = await _bgsave(server)
                await _after_snapshot(tier)
            finally:
                await tier.close()
            _restore(server, snapshot)

            tier = _tier(sor, server.url, prefix)  # a process started after the restore
            try:
                behind = await tier.client.hget(tier._key(T, KEPT[0]), "wh:main")
                head = (await sor.list_branches(tenant_id=T, session_id=KEPT[0]))[0].head_seq
                assert behind is not None and int(behind) < head  # the restored window is old
                # The re-created session's restored window has the same head as the new
                # one: only the validator tells the two sessions apart.
                same = await tier.client.hget(tier._key(T, REBORN), "wh:main")
                now = await sor.list_branches(tenant_id=T, session_id=REBORN)
                assert same is not None and int(same) == now[0].head_seq
                checked = await _the_deleted_session_stays_deleted(tier)
                checked += await _compare_all(tier, sor, [*KEPT, REBORN])
                assert tier.stats.stale > 0  # restored windows were found and refused
                # Refilled: the same reads are now hits (or below the window), still exact.
                stale, misses = tier.stats.stale, tier.stats.misses
                checked += await _compare_all(tier, sor, [*KEPT, REBORN])
                assert (tier.stats.stale, tier.stats.misses) == (stale, misses)
                print(
                    f"\n{sor_name}: {checked} reads checked after the restore, 0 stale; "
                    f"{tier.stats.stale} restored windows refused, {tier.stats.hits} hits"
                )
            finally:
                await tier.close()
    finally:
        server.stop()


async def _log(store: Store, session: str) -> dict[int, object]:
    """Every event of the session's main branch, seq -> content, paged."""
    log: dict[int, object] = {}
    while page := await store.read(tenant_id=T, session_id=session, after_seq=len(log)):
        log.update((e.seq, e.content) for e in page)
    return log


class Load:
    """Writers and readers on two tiers (two processes' worth of clients) over one system
    of record. A read checks that it shows every append acknowledged before it began."""

    def __init__(self, tiers: list[Any], sessions: list[str]) -> None:
        self.tiers, self.sessions = tiers, sessions
        self.acked = dict.fromkeys(sessions, 0)
        self.seen: list[tuple[str, int, object]] = []
        self.reads = 0
        self.stop = asyncio.Event()

    async def writer(self, index: int) -> None:
        count = 0
        while not self.stop.is_set():
            session = self.sessions[(index + count) % len(self.sessions)]
            result = await self.tiers[index % 2].append(
                tenant_id=T, session_id=session, events=[msg(f"w{index}-{count}")]
            )
            self.acked[session] = max(self.acked[session], result.last_seq)
            count += 1
            await asyncio.sleep(0)

    async def reader(self, index: int) -> None:
        count = 0
        while not self.stop.is_set():
            session = self.sessions[(index + count) % len(self.sessions)]
            floor = self.acked[session]
            tier = self.tiers[(index + count) % 2]
            if count % 2:
                events = await tier.read_last(tenant_id=T, session_id=session, n=WINDOW)
            else:
                after = max(0, floor - 3)
                events = await tier.read(tenant_id=T, session_id=session, after_seq=after)
            head = events[-1].seq if events else 0
            assert head >= floor, (session, head, floor)
            self.seen.extend((session, e.seq, e.content) for e in events)
            self.reads += 1
            count += 1
            await asyncio.sleep(0)


@pytest.mark.parametrize("sor_name", ["sqlite", "postgres"])
async def test_restores_under_load_serve_no_stale_read(tmp_path: Path, sor_name: str) -> None:
    """The probe's scenario: snapshots and restores of the cache while two tiers append and
    read; no read misses an append acknowledged before it began, and every event read is
    the one the final log holds."""
    require_redis_server()
    require(sor_name)
    server = LocalRedis(tmp_path / "cache")
    server.start()
    prefix = f"cst{uuid.uuid4().hex[:12]}"
    try:
        async with _sor_spec(sor_name).open(StoreConfig(), tmp_path) as sor:
            tiers = [_tier(sor, server.url, prefix, lease=2) for _ in range(2)]
            try:
                sessions = [f"l{i}" for i in range(6)]
                for session in sessions:
                    await tiers[0].create_session(tenant_id=T, session_id=session)
                load = Load(tiers, sessions)
                tasks = [asyncio.create_task(load.writer(i)) for i in range(4)]
                tasks += [asyncio.create_task(load.reader(i)) for i in range(4)]
                try:
                    for _ in range(3):
                        await asyncio.sleep(0.3)
                        snapshot = await _bgsave(server)
                        await asyncio.sleep(0.3)
                        await asyncio.to_thread(_restore, server, snapshot)
                        await asyncio.sleep(1.2)  # reads use the cache again after 1 s
                finally:
                    load.stop.set()
                    await asyncio.gather(*tasks)
                final = {s: await _log(sor, s) for s in sessions}
                assert all(final[s][seq] == content for s, seq, content in load.seen)
                stats = [t.stats for t in tiers]
                print(
                    f"\n{sor_name}: {load.reads} reads checked under 3 restores, 0 stale; "
                    f"windows refused {sum(st.stale for st in stats)}, "
                    f"hits {sum(st.hits for st in stats)}"
                )
                assert load.reads > 0
            finally:
                for tier in tiers:
                    await tier.close()
    finally:
        server.stop()
