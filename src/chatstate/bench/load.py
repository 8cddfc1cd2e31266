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
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """Of the requests answered ``ok``."""
    refused_ms: list[float] = field(default_factory=list)
    """Of the appends refused with 503 (admission control)."""
    seconds: float = 0.0
    anomalies: list[Anomaly] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def percentile(self, q: float, *, refused: bool = False) -> float:
        values = self.refused_ms if refused else self.latencies_ms
        if not values:
            return 0.0
        ordered = sorted(values)
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
    request_timeout: float = 30.0,
    clients: int | None = None,
    connections: int = 64,
    raw: bool = False,
) -> LoadReport:
    """Drive the server at ``url`` open-loop (or, with ``clients``, that many clients
    each sending its next request when the previous one is answered, ignoring ``rate``);
    return what happened, checked. ``connections`` bounds the client's own pool: above
    it requests wait in the client, not the server. ``raw``: the lean client of
    :mod:`chatstate.bench.raw_http` instead of httpx (for open loops near saturation).

    Every request started is counted once: ``ok``, or under ``errors`` by HTTP status
    (``429``, ``503`` ...), ``timeout``, another transport error's name, or ``unfinished``
    (still running when the grace period ended, then cancelled). Sessions are created and
    read back with retries that honour ``Retry-After``, and removed at the end."""
    import httpx  # noqa: PLC0415 - the [server] extra brings it

    from chatstate.bench.raw_http import RawClient  # noqa: PLC0415 - it needs httpx too

    rng = random.Random(seed)  # noqa: S311 - seeded workload, not security
    run = uuid.uuid4().hex[:8]
    names = [f"load-{run}-{n}" for n in range(sessions)]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    report = LoadReport()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    client: Any = (
        RawClient(url, headers=headers, timeout=request_timeout, max_connections=connections)
        if raw
        else httpx.AsyncClient(
            base_url=url, headers=headers, timeout=request_timeout, limits=limits
        )
    )
    async with client as c:
        created: list[str] = []
        try:
            for name in names:
                await _patiently(partial(c.post, "/v1/sessions", json={"id": name}))
                created.append(name)

            async def one(i: int) -> None:
                session, is_append = rng.choice(names), rng.random() < 0.7
                await _one(c, report, session, f"{run}-{i}" if is_append else None)

            start = time.perf_counter()
            if clients is None:
                report.sent = await _open_loop(one, rate=rate, duration=duration, grace=grace)
            else:
                report.sent = await _closed_loop(one, clients=clients, duration=duration)
            report.seconds = time.perf_counter() - start
            final = {name: list(await _patiently_read(c, name)) for name in names}
        finally:
            for name in created:
                with suppress(httpx.HTTPError, _Status):
                    await _patiently(partial(c.delete, f"/v1/sessions/{name}"))
    report.anomalies = check_history(report.ops, final)
    return report


async def _one(c: httpx.AsyncClient, report: LoadReport, session: str, value: str | None) -> None:
    """One request (an append of ``value``, or a read when it is None), recorded."""
    import httpx  # noqa: PLC0415 - the [server] extra brings it

    def failed(kind: str) -> None:
        report.errors[kind] = report.errors.get(kind, 0) + 1

    started = time.time_ns()
    begin = time.perf_counter()
    op = Op("read" if value is None else "append", session, False, value=value)
    try:
        if value is not None:
            r = await c.post(
                f"/v1/sessions/{session}/events",
                json={"events": [{"role": "user", "content": value}]},
            )
            if r.status_code == 201:
                op = replace(op, ok=True, seq=r.json()["first_seq"])
            else:
                failed(str(r.status_code))
                if r.status_code == 503:
                    report.refused_ms.append((time.perf_counter() - begin) * 1e3)
                op = replace(op, refused=400 <= r.status_code < 500 or r.status_code == 503)
        else:
            op = replace(op, ok=True, seen=await _read_all(c, session))
    except _Status as exc:
        failed(str(exc.status))
        if exc.status == 503:
            report.refused_ms.append((time.perf_counter() - begin) * 1e3)
    except httpx.TimeoutException:
        failed("timeout")
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        failed(type(exc).__name__)
    except asyncio.CancelledError:
        failed("unfinished")
        report.ops.append(replace(op, started=started, ended=time.time_ns()))
        raise
    elapsed = (time.perf_counter() - begin) * 1e3
    report.ops.append(replace(op, started=started, ended=time.time_ns()))
    if op.ok:
        report.ok += 1
        report.latencies_ms.append(elapsed)


class _Status(Exception):
    """An answer other than the one expected (its HTTP status)."""

    def __init__(self, status: int, retry_after: float = 1.0) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _checked(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 300:
        try:
            wait = float(r.headers.get("retry-after", "1"))
        except ValueError:
            wait = 1.0
        raise _Status(r.status_code, wait)
    return r


_PATIENCE = 60.0
"""Seconds the set-up, final reads and clean-up retry through 429/503 before giving up."""


async def _patiently(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    deadline = time.monotonic() + _PATIENCE
    while True:
        try:
            return _checked(await call())
        except _Status as exc:
            if exc.status not in (429, 503) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(min(exc.retry_after, 5.0))


async def _patiently_read(client: httpx.AsyncClient, session: str) -> tuple[str, ...]:
    deadline = time.monotonic() + _PATIENCE
    while True:
        try:
            return await _read_all(client, session)
        except _Status as exc:
            if exc.status not in (429, 503) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(min(exc.retry_after, 5.0))


async def _open_loop(
    one: Callable[[int], Coroutine[object, object, None]],
    *,
    rate: float,
    duration: float,
    grace: float,
) -> int:
    """Start ``one(i)`` every ``1/rate`` seconds for ``duration``, whatever the answers do;
    wait ``grace`` seconds for those in flight, cancel the rest (each records itself as
    unfinished). Returns how many started."""
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
        await asyncio.gather(*pending, return_exceptions=True)
    return i


async def _closed_loop(
    one: Callable[[int], Coroutine[object, object, None]], *, clients: int, duration: float
) -> int:
    """``clients`` loops, each starting ``one(i)`` as soon as its previous one ended,
    until ``duration`` has passed; returns how many started."""
    deadline = time.perf_counter() + duration
    started = 0

    async def client() -> None:
        nonlocal started
        while time.perf_counter() < deadline:
            i = started
            started += 1
            await one(i)

    await asyncio.gather(*(client() for _ in range(clients)))
    return started


async def _read_all(client: httpx.AsyncClient, session: str) -> tuple[str, ...]:
    values: list[str] = []
    after = 0
    while True:
        r = _checked(
            await client.get(
                f"/v1/sessions/{session}/events", params={"after": after, "limit": 1000}
            )
        )
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
    counted = report.ok + sum(report.errors.values())
    print(f"accounted for: {counted:,} of {report.sent:,} sent")
    print(f"consistency: {len(report.anomalies)} anomalies")
    for anomaly in report.anomalies[:10]:
        print(f"  {anomaly.kind} in {anomaly.session}: {anomaly.detail}")
    return 1 if report.anomalies else 0
