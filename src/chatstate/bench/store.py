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
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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


async def _bench_store(url: str, sizes: list[int], ops: int) -> dict[int, dict[str, list[float]]]:
    store = await open_store(url)
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


def run(url: str | None, sizes: list[int], ops: int) -> dict[str, object]:
    """Run both benchmarks; print a table; return the raw figures."""
    with tempfile.TemporaryDirectory(prefix="chatstate-bench-") as tmp:
        target = url or f"sqlite:///{tmp}/bench.db"
        print(f"chatstate store bench: {redact(target)}, {ops} ops per figure", file=sys.stderr)
        mine = asyncio.run(_bench_store(target, sizes, ops))
        floor = _bench_floor(Path(tmp) / "floor.db", sizes, ops)
    print(
        f"\n{'events':>8} {'operation':<13} {'chatstate p50/p99 µs':>22} "
        f"{'bare sqlite p50/p99 µs':>24} {'ratio p50':>9}"
    )
    report: dict[str, object] = {"url": redact(target), "ops": ops, "sizes": {}}
    for size in sizes:
        rows = {}
        for op in ("append", "read_last_20", "turn"):
            m50, m99 = _percentiles(mine[size][op])
            f50, f99 = _percentiles(floor[size][op])
            print(
                f"{size:>8,} {op:<13} {m50:>10.1f} / {m99:>9.1f} "
                f"{f50:>11.1f} / {f99:>10.1f} {m50 / f50:>8.2f}x"
            )
            rows[op] = {"p50_us": m50, "p99_us": m99, "floor_p50_us": f50, "floor_p99_us": f99}
        report["sizes"][size] = rows  # type: ignore[index]
    first, last = sizes[min(1, len(sizes) - 1)], sizes[-1]
    for op in ("append", "read_last_20", "turn"):
        a = _percentiles(mine[first][op])[0]
        b = _percentiles(mine[last][op])[0]
        print(f"flatness {op}: p50 at {last:,} events / at {first:,} = {b / a:.2f}x")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", help="store to measure (default: a temp SQLite file)")
    parser.add_argument(
        "--sizes", default="10,1000,100000", help="session sizes in events, comma-separated"
    )
    parser.add_argument("--ops", type=int, default=1000, help="operations timed per figure")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    report = run(args.database_url, sizes, args.ops)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
