"""Two OS processes, each with its own pool and cache, interleave appends and reads on the
same sessions; a history checker finds no lost, doubled, misplaced or stale result."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatstate.store.url import open_store
from chatstate.testing.backends_redis import redis_url, require
from chatstate.testing.history import Anomaly, Op, check_history, load_history

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = ["h1", "h2", "h3"]


def test_checker_finds_each_anomaly() -> None:
    ops = [
        Op("append", "s", True, value="a", seq=1, started=1, ended=2),
        Op("append", "s", True, value="b", seq=2, started=3, ended=4),
        Op("append", "s", True, value="lost", seq=3, started=5, ended=6),
        Op("read", "s", True, seen=("a",), started=7, ended=8),  # b was acked at 4: stale
        Op("read", "s", True, seen=("b", "a"), started=1, ended=9),  # not a prefix
        Op("append", "s", False, value="maybe", started=1, ended=2),  # unknown outcome
    ]
    kinds = sorted(a.kind for a in check_history(ops, {"s": ["a", "b", "maybe", "b"]}))
    assert kinds == ["duplicate", "lost", "misplaced", "not a prefix", "stale"]
    clean = [
        Op("append", "s", True, value="a", seq=1, started=1, ended=2),
        Op("read", "s", True, seen=("a",), started=3, ended=4),
    ]
    assert check_history(clean, {"s": ["a"]}) == []


async def _run(url: str, cache_url: str | None, seconds: float, tmp: Path) -> list[Anomaly]:
    store = await open_store(url, cache_url=cache_url)
    try:
        for session in SESSIONS:
            await store.create_session(tenant_id="hist", session_id=session)
        outs = [tmp / f"worker{n}.jsonl" for n in range(2)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.helpers.history_worker",
                url,
                cache_url or "-",
                ",".join(SESSIONS),
                str(n),
                str(seconds),
                str(out),
                cwd=ROOT,
                env=env,
            )
            for n, out in enumerate(outs)
        ]
        codes = [await asyncio.wait_for(p.wait(), timeout=seconds + 60) for p in procs]
        assert codes == [0, 0]
        ops = load_history(outs)
        final = {}
        for session in SESSIONS:
            values: list[str] = []
            after = 0
            while page := await store.read(
                tenant_id="hist", session_id=session, after_seq=after, limit=1000
            ):
                values += [str(e.content) for e in page]
                after = page[-1].seq
            final[session] = values
    finally:
        await store.close()
    acked = sum(1 for op in ops if op.kind == "append" and op.ok)
    reads = sum(1 for op in ops if op.kind == "read" and op.ok)
    assert acked > 100 and reads > 30, (acked, reads)
    return check_history(ops, final)


async def test_two_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    anomalies = await _run(f"sqlite:///{tmp_path}/shared.db", None, 8, tmp_path)
    assert anomalies == []


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    require("postgres")
    from chatstate.testing.backends_postgres import create_schema, drop_schema

    name = await create_schema()
    yield name
    await drop_schema(name)


async def test_two_processes_on_postgres_with_the_redis_tier(
    pg_schema: str, tmp_path: Path
) -> None:
    require("tiered")
    from chatstate.store.redis import connect_client
    from chatstate.testing.backends_postgres import server_url
    from chatstate.testing.backends_redis import drop_prefix

    prefix = f"cshist{uuid.uuid4().hex[:8]}"
    cache_url = f"{redis_url()}?prefix={prefix}"
    try:
        anomalies = await _run(f"{server_url()}?schema={pg_schema}", cache_url, 30, tmp_path)
    finally:
        client, _ = connect_client(redis_url())
        await drop_prefix(client, prefix)
        await client.aclose()
    assert anomalies == []
