"""Store micro-benchmark: append and read-last-N latency as a session grows.

``python -m chatstate.bench store`` fills one session to 10, 1,000 and 100,000 events and
times, at each size, single-event appends, ``read_last(n=20)`` and a whole *turn* (append
the user and assistant messages in one call, then read the newest 20 events). In the same
run it times the floor: the same operations on a bare ``sqlite3`` connection (one INSERT +
COMMIT; one indexed SELECT), WAL and ``synchronous=NORMAL``, with no validation, no
encoding and no thread hop. Ratios against that floor show what chatstate adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.store.url import open_store, redact

__all__ = ["main", "run"]

WORDS = (
    "the order arrived late and the box was damaged so I would like a refund or a "
    "replacement whichever is faster please check the tracking number and my account "
)
TEXT = (WORDS * 6)[:700]  # about 120 words, 0.7 KB, like one chat message
TENANT = "bench"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


async def _time_async(op: Callable[[int], Awaitable[object]], count: int) -> list[float]:
    out = []
    for i in range(count):
        start = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def _time_sync(op: Callable[[int], object], count: int) -> list[float]:
    out = []
    for i in range(count):
        start = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def _fill(store: Store, session: str, upto: int, have: int) -> int:
    while have < upto:
        batch = min(1000, upto - have)
        await store.append(
            tenant_id=TENANT,
            session_id=session,
            events=[NewEvent.message("user", TEXT)] * batch,
        )
        have += batch
    return have


async def _bench_store(
    url: str, cache_url: str | None, sizes: list[int], ops: int
) -> dict[int, dict[str, list[float]]]:
    store = await open_store(url, cache_url=cache_url)
    results: dict[int, dict[str, list[float]]] = {}
    try:
        session = (await store.create_session(tenant_id=TENANT)).id
        have = 0
        for size in sizes:
            print(f"  chatstate: filling to {size:,} events ...", file=sys.stderr, flush=True)
            have = await _fill(store, session, size, have)
            user = [NewEvent.message("user", TEXT)]
            pair = [NewEvent.message("user", TEXT), NewEvent.message("assistant", TEXT)]

            async def append(_: int, user: list[NewEvent] = user) -> None:
                await store.append(tenant_id=TENANT, session_id=session, events=user)

            async def read(_: int) -> None:
                await store.read_last(tenant_id=TENANT, session_id=session, n=20)

            async def turn(_: int, pair: list[NewEvent] = pair) -> None:
                await store.append(tenant_id=TENANT, session_id=session, events=pair)
                await store.read_last(tenant_id=TENANT, session_id=session, n=20)

            results[size] = {
                "append": await _time_async(append, ops),
                "read_last_20": await _time_async(read, ops),
                "turn": await _time_async(turn, ops),
            }
            have += 3 * ops
    finally:
        await store.close()
    return results


def _bench_floor(path: Path, sizes: list[int], ops: int) -> dict[int, dict[str, list[float]]]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, sid INT, seq INT, body TEXT)")
    db.execute("CREATE UNIQUE INDEX ev_seq ON ev (sid, seq)")
    body = json.dumps({"role": "user", "content": TEXT})
    seq = 0
    results: dict[int, dict[str, list[float]]] = {}

    def insert(rows: int) -> None:
        nonlocal seq
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO ev (sid, seq, body) VALUES (1, ?, ?)",
            [(seq + i + 1, body) for i in range(rows)],
        )
        db.execute("COMMIT")
        seq += rows

    def read(_: int) -> None:
        db.execute("SELECT seq, body FROM ev WHERE sid = 1 ORDER BY seq DESC LIMIT 20").fetchall()

    def turn(_: int) -> None:
        insert(2)
        read(0)

    for size in sizes:
        print(f"  floor: filling to {size:,} rows ...", file=sys.stderr, flush=True)
        while seq < size:
            insert(min(1000, size - seq))
        results[size] = {
            "append": _time_sync(lambda _: insert(1), ops),
            "read_last_20": _time_sync(read, ops),
            "turn": _time_sync(turn, ops),
        }
    db.close()
    return results


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    cache_url: str | None = None


async def _fleet_targets(stack: AsyncExitStack) -> list[Target]:
    """PostgreSQL and PostgreSQL + Redis tier on the local test servers, when they answer.

    Each gets a fresh schema (and cache prefix) that is dropped afterwards.
    """
    from chatstate.testing.backends import REGISTRY  # noqa: PLC0415 - test servers' config

    out: list[Target] = []
    if REGISTRY["postgres"].unavailable() is not None:
        print("  PostgreSQL is not reachable: skipped", file=sys.stderr)
        return out
    from chatstate.testing.backends_postgres import (  # noqa: PLC0415
        create_schema,
        drop_schema,
        server_url,
    )

    for label in ("postgres", "postgres+redis"):
        schema = await create_schema()
        stack.push_async_callback(drop_schema, schema)
        url = f"{server_url()}?schema={schema}"
        if label == "postgres":
            out.append(Target(label, url))
        elif REGISTRY["tiered"].unavailable() is None:
            from chatstate.testing.backends_redis import redis_url  # noqa: PLC0415

            out.append(Target(label, url, f"{redis_url()}?prefix=csbench{os.getpid()}"))
    return out


async def _measure(
    targets: list[Target], fleet: bool, sizes: list[int], ops: int
) -> tuple[list[Target], dict[str, dict[int, dict[str, list[float]]]]]:
    async with AsyncExitStack() as stack:
        if fleet:
            targets = targets + await _fleet_targets(stack)
        figures = {}
        for target in targets:
            print(f"chatstate on {target.label}: {redact(target.url)}", file=sys.stderr)
            figures[target.label] = await _bench_store(target.url, target.cache_url, sizes, ops)
    return targets, figures


def run(url: str | None, sizes: list[int], ops: int, *, fleet: bool = False) -> dict[str, object]:
    """Benchmark each store and the bare-sqlite floor; print a table; return the figures."""
    with tempfile.TemporaryDirectory(prefix="chatstate-bench-") as tmp:
        first = Target("sqlite" if url is None else "custom", url or f"sqlite:///{tmp}/bench.db")
        targets, figures = asyncio.run(_measure([first], fleet, sizes, ops))
        floor = _bench_floor(Path(tmp) / "floor.db", sizes, ops)
    print(f"{ops} operations per figure; times in microseconds; ratio = p50 / bare-sqlite p50")
    print(
        f"\n{'store':<15} {'events':>8} {'operation':<13} {'p50':>9} {'p99':>9} "
        f"{'floor p50':>10} {'ratio':>7}"
    )
    report: dict[str, object] = {"ops": ops, "targets": {}}
    for target in targets:
        mine = figures[target.label]
        rows: dict[int, dict[str, dict[str, float]]] = {}
        for size in sizes:
            rows[size] = {}
            for op in ("append", "read_last_20", "turn"):
                m50, m99 = _percentiles(mine[size][op])
                f50, f99 = _percentiles(floor[size][op])
                print(
                    f"{target.label:<15} {size:>8,} {op:<13} {m50:>9.1f} {m99:>9.1f} "
                    f"{f50:>10.1f} {m50 / f50:>6.1f}x"
                )
                rows[size][op] = {
                    "p50_us": m50,
                    "p99_us": m99,
                    "floor_p50_us": f50,
                    "floor_p99_us": f99,
                }
        report["targets"][target.label] = {"url": redact(target.url), "sizes": rows}  # type: ignore[index]
    mid, last = sizes[min(1, len(sizes) - 1)], sizes[-1]
    for target in targets:
        mine = figures[target.label]
        flat = ", ".join(
            f"{op} {_percentiles(mine[last][op])[0] / _percentiles(mine[mid][op])[0]:.2f}x"
            for op in ("append", "read_last_20", "turn")
        )
        print(f"flatness on {target.label}, p50 at {last:,} / at {mid:,} events: {flat}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", help="store to measure (default: a temp SQLite file)")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="also measure PostgreSQL and PostgreSQL + Redis tier on the local servers",
    )
    parser.add_argument(
        "--sizes", default="10,1000,100000", help="session sizes in events, comma-separated"
    )
    parser.add_argument("--ops", type=int, default=1000, help="operations timed per figure")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    report = run(args.database_url, sizes, args.ops, fleet=args.fleet)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
