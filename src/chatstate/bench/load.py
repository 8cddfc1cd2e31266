"""Open-loop load test of a running ``chatstate serve``, checked for consistency.

``python -m chatstate.bench load --url http://127.0.0.1:8080 --sessions 50 --rate 200
--duration 30`` sends requests on a fixed schedule (open loop: a slow answer does not
slow the arrivals, so queueing shows in the latencies), 70% appends of one unique message
and 30% reads of a session's whole log, spread over ``--sessions`` sessions. It stops by
itself after ``--duration`` seconds (and waits at most ``--grace`` for answers in
flight), prints throughput and latency percentiles, records every operation in a JSONL
history (``--history``), and runs the list-append checker of
:mod:`chatstate.testing.history` over it: no acknowledged append lost, doubled or
misplaced, no read that is not a prefix of the final log, no stale read. Loopback only
by design: point it at your own server.

``--gateway`` instead runs streamed gateway turns against an in-process server with a
fake streaming upstream and counts store calls per turn: see
:mod:`chatstate.bench.gateway_load`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatstate.testing.history import Anomaly, Op, check_history

if TYPE_CHECKING:
    import httpx

__all__ = ["LoadReport", "main", "run_load"]


@dataclass
class LoadReport:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    anomalies: list[Anomaly] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run_load(
    url: str,
    *,
    sessions: int,
    rate: float,
    duration: float,
    key: str | None = None,
    seed: int = 1,
    grace: float = 10.0,
) -> LoadReport:
    """Drive the server at ``url`` open-loop; return what happened, checked."""
    import httpx  # noqa: PLC0415 - the [server] extra brings it

    rng = random.Random(seed)  # noqa: S311 - seeded workload, not security
    run = uuid.uuid4().hex[:8]
    names = [f"load-{run}-{n}" for n in range(sessions)]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    report = LoadReport()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as c:
        for name in names:
            (await c.post("/v1/sessions", json={"id": name})).raise_for_status()

        async def one(i: int) -> None:
            session = rng.choice(names)
            started = time.time_ns()
            begin = time.perf_counter()
            op: Op
            is_append = rng.random() < 0.7
            value = f"{run}-{i}" if is_append else None
            try:
                if is_append:
                    r = await c.post(
                        f"/v1/sessions/{session}/events",
                        json={"events": [{"role": "user", "content": value}]},
                    )
                    ok = r.status_code == 201
                    seq = r.json()["first_seq"] if ok else None
                    op = Op("append", session, ok, value=value, seq=seq)
                    if not ok:
                        code = str(r.status_code)
                        report.errors[code] = report.errors.get(code, 0) + 1
                else:
                    op = Op("read", session, True, seen=await _read_all(c, session))
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
                op = Op("append" if is_append else "read", session, False, value=value)
            elapsed = (time.perf_counter() - begin) * 1e3
            report.ops.append(
                Op(op.kind, op.session, op.ok, op.value, op.seq, op.seen, started, time.time_ns())
            )
            if op.ok:
                report.ok += 1
                report.latencies_ms.append(elapsed)

        start = time.perf_counter()
        report.sent = await _open_loop(one, rate=rate, duration=duration, grace=grace)
        report.seconds = time.perf_counter() - start
        final = {name: list(await _read_all(c, name)) for name in names}
        for name in names:
            await c.delete(f"/v1/sessions/{name}")
    report.anomalies = check_history(report.ops, final)
    return report


async def _open_loop(
    one: Callable[[int], Coroutine[object, object, None]],
    *,
    rate: float,
    duration: float,
    grace: float,
) -> int:
    """Start ``one(i)`` every ``1/rate`` seconds for ``duration``, whatever the answers do;
    wait ``grace`` seconds for those in flight, cancel the rest. Returns how many started."""
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    i = 0
    while (now := time.perf_counter() - start) < duration:
        due = i / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(one(i)))
        i += 1
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
    return i


async def _read_all(client: httpx.AsyncClient, session: str) -> tuple[str, ...]:
    values: list[str] = []
    after = 0
    while True:
        r = await client.get(
            f"/v1/sessions/{session}/events", params={"after": after, "limit": 1000}
        )
        r.raise_for_status()
        page = r.json()["data"]
        if not page:
            return tuple(values)
        values += [str(e["content"]) for e in page]
        after = page[-1]["seq"]


def _gateway(args: argparse.Namespace) -> int:
    from chatstate.bench.gateway_load import run_gateway_load  # noqa: PLC0415

    print(
        f"gateway load: {args.sessions} sessions, {args.chunks} chunks an answer "
        f"{args.chunk_delay * 1e3:g} ms apart, {args.duration:g} s",
        file=sys.stderr,
    )
    report = asyncio.run(
        run_gateway_load(
            sessions=args.sessions,
            duration=args.duration,
            chunks=args.chunks,
            chunk_delay=args.chunk_delay,
            database=args.database,
        )
    )
    for line in report.lines():
        print(line)
    for anomaly in report.anomalies[:10]:
        print(f"  {anomaly.kind} in {anomaly.session}: {anomaly.detail}")
    return 1 if report.anomalies else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key", help="API key (none in development mode)")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals")
    parser.add_argument("--history", metavar="FILE", help="write every operation here (JSONL)")
    gateway = parser.add_argument_group("gateway mode (an in-process server and upstream)")
    gateway.add_argument("--gateway", action="store_true", help="streamed gateway turns")
    gateway.add_argument("--chunks", type=int, default=200, help="chunks an answer")
    gateway.add_argument("--chunk-delay", type=float, default=0.002, help="seconds a chunk")
    gateway.add_argument("--database", help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args(argv)
    if args.gateway:
        return _gateway(args)
    print(
        f"load: {args.rate:g} req/s over {args.sessions} sessions for {args.duration:g} s "
        f"against {args.url}",
        file=sys.stderr,
    )
    report = asyncio.run(
        run_load(
            args.url, sessions=args.sessions, rate=args.rate, duration=args.duration, key=args.key
        )
    )
    if args.history:
        Path(args.history).write_text("".join(op.to_json() + "\n" for op in report.ops))
    mean = statistics.fmean(report.latencies_ms) if report.latencies_ms else 0.0
    print(
        f"sent {report.sent:,} in {report.seconds:.1f} s: {report.ok:,} ok "
        f"({report.ok / max(report.seconds, 1e-9):,.0f}/s), errors {json.dumps(report.errors)}"
    )
    print(
        f"latency ms: mean {mean:.1f}, p50 {report.percentile(0.5):.1f}, "
        f"p95 {report.percentile(0.95):.1f}, p99 {report.percentile(0.99):.1f}"
    )
    print(f"consistency: {len(report.anomalies)} anomalies")
    for anomaly in report.anomalies[:10]:
        print(f"  {anomaly.kind} in {anomaly.session}: {anomaly.detail}")
    return 1 if report.anomalies else 0
