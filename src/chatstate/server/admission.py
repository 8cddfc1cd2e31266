"""Admission control: a process works on at most ``limit`` requests at once.

Open-loop load above what one process can serve does not queue without bound (each
request waiting longer than the last until every answer is late); the request over the
bound is answered at once with 503 and ``Retry-After``, before any store or tokenizer
work (a body up to 64 KiB is read and dropped so the connection stays; a larger one is
left unread and the connection closed), so the admitted ones keep their latency.

A request is *in flight* from the moment it is admitted until its response has been sent
in full. Gateway turns (``POST /v1/chat/completions``) have a bound of their own
(``max_streams``): a stream holds its slot for as long as it streams, mostly idle on its
upstream, so a bound sized for streams would let CPU-bound requests queue in the event
loop, and one sized for CPU work would turn streams away. ``/healthz``, ``/readyz`` and
``/metrics`` are never refused (probes and scrapes must see an overloaded process). The
bounds are per process; with ``--workers N`` the service admits up to N times them.

The bound on requests moves (:class:`LagControl`) between ``min_in_flight`` and
``max_in_flight`` by how late the event loop runs. A request's own CPU work and the loop's
queue are what make an overloaded process slow: with 64 CPU-bound requests admitted,
each waits behind the others' work at every ``await``, and a refusal waits behind all of
them before it can be sent (docs/reliability.md, case 20: 116x the unloaded p50 at twice
saturation, refusals 178 ms). Requests that wait on I/O (a remote database) do not make
the loop late, so for them the bound climbs. The lateness is measured without a
timer task: an arriving request, at most once per :data:`PROBE_EVERY`, schedules a
callback with ``call_soon`` and the time until it runs is how long the loop's queue of
ready work was; :class:`LagControl` moves the bound by it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from chatstate.server.errors import shaped
from chatstate.server.middleware import Metrics

__all__ = [
    "EXEMPT_PATHS",
    "LAG_TARGET",
    "PROBE_EVERY",
    "STREAM_PATHS",
    "Admission",
    "Gate",
    "LagControl",
]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
STREAM_PATHS = frozenset({"/v1/chat/completions"})
"""Routes counted against the stream bound (``Admission(streams=...)``)."""


LAG_TARGET = 0.002
"""Seconds the event loop's queue of ready work may take before the bound shrinks."""
PROBE_EVERY = 0.005
"""Seconds between two measurements of the loop's lateness (while requests arrive)."""


@dataclass(slots=True)
class LagControl:
    """The rule that moves a gate's bound at each measurement; pure (the gate feeds it
    what it measured).

    A lateness over ``target`` takes a fifth off the bound (never under ``floor``); a
    lateness under half the target, while the bound turned requests away since the last
    measurement, adds a quarter (at least one, never over ``ceiling``).

    Each measurement counts, not the least of an interval as CoDel judges a packet queue:
    that was tried, and under overload on SQLite the loop is on time now and then while
    the admitted requests wait on the database's writer thread, so the bound climbed to
    19 and the admitted p99 doubled (docs/reliability.md, case 20). The price is that a
    burst over the floor can be refused while the loop works it off.
    """

    floor: float
    ceiling: float
    target: float = LAG_TARGET

    def next(self, bound: float, lag: float, *, bound_reached: bool) -> float:
        """The bound after a measurement of ``lag`` seconds."""
        if lag > self.target:
            return max(self.floor, bound * 0.8)
        if lag < self.target / 2 and bound_reached:
            return min(self.ceiling, bound + max(1.0, bound / 4))
        return bound


class Gate:
    """The count of requests in flight and the bound; one per application.

    With ``floor`` under ``limit`` the bound adapts (:class:`LagControl`), starting at
    the floor; otherwise it is ``limit``.
    """

    def __init__(self, limit: int, *, floor: int | None = None, retry_after: int = 1) -> None:
        self.limit = limit
        """The most requests admitted at once (the ceiling when the bound adapts)."""
        self.control = (
            LagControl(floor=max(1, floor), ceiling=limit)
            if floor is not None and 0 < floor < limit
            else None
        )
        self.bound: float = float(limit if self.control is None else self.control.floor)
        """The bound now: a request is admitted while fewer than this are in flight."""
        self.retry_after = retry_after
        self.in_flight = 0
        self.peak = 0
        """The most requests in flight at once since start."""
        self.rejected = 0
        self.lag = 0.0
        """The loop's lateness at the last measurement, in seconds."""
        self._probing = False
        self._last_probe = 0.0
        self._reached = False

    def full(self) -> bool:
        """True when one more request would exceed the bound (and remember it did)."""
        if self.in_flight >= self.bound:
            self._reached = True
            return True
        return False

    def probe(self) -> None:
        """Measure the loop's lateness, at most once per :data:`PROBE_EVERY`; call from a
        coroutine running on the loop, when a request arrives."""
        if self.control is None or self._probing:
            return
        now = time.perf_counter()
        if now - self._last_probe < PROBE_EVERY:
            return
        self._probing = True
        self._last_probe = now
        asyncio.get_running_loop().call_soon(self._measured, now)

    def _measured(self, since: float) -> None:
        self._probing = False
        self.lag = time.perf_counter() - since
        if self.control is not None:
            self.bound = self.control.next(self.bound, self.lag, bound_reached=self._reached)
        self._reached = False


class Admission:
    """ASGI middleware bounding in-flight HTTP requests; see the module docstring.
    ``streams`` bounds the gateway's turns; without it they count against ``gate``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gate: Gate,
        streams: Gate | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.streams = streams
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        gate = self.gate
        if self.streams is not None and path in STREAM_PATHS:
            gate = self.streams
        if scope["type"] != "http" or gate.limit <= 0 or path in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        gate.probe()
        if gate.full():
            gate.rejected += 1
            if self.metrics is not None:
                self.metrics.count("admission_rejected")
            await self._reject(gate, scope, receive, send)
            return
        gate.in_flight += 1
        gate.peak = max(gate.peak, gate.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            gate.in_flight -= 1

    async def _reject(self, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(
            shaped(
                scope.get("path", ""),
                {
                    "error": "overloaded",
                    "message": f"this process is at its limit of {int(gate.bound)} "
                    f"{'streams' if gate is self.streams else 'requests'} in flight; "
                    f"retry after {gate.retry_after} s",
                },
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(gate.retry_after).encode()),
        ]
        size = _body_size(scope)
        if size is not None and size <= DRAIN_BYTES:
            # A small body is read and dropped, so the client keeps its connection: a
            # refusal that closed it would cost a new connection per refused request,
            # the work that keeps an overloaded process overloaded.
            while (await receive()).get("more_body", False):
                pass
        elif size != 0:
            # A large or chunked body is left unread: the connection cannot be reused,
            # and says so.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def gate_gauges(gate: Gate) -> str:
    """``gate``'s bound, requests in flight and last lateness, in Prometheus text format
    (this process's own, also with ``--redis-url``)."""
    return (
        "# HELP chatstate_admission_bound Requests this process admits at once now.\n"
        "# TYPE chatstate_admission_bound gauge\n"
        f"chatstate_admission_bound {int(gate.bound) if gate.limit > 0 else 0}\n"
        "# TYPE chatstate_admission_in_flight gauge\n"
        f"chatstate_admission_in_flight {gate.in_flight}\n"
        "# HELP chatstate_admission_loop_lag_seconds The event loop's lateness, last measured.\n"
        "# TYPE chatstate_admission_loop_lag_seconds gauge\n"
        f"chatstate_admission_loop_lag_seconds {gate.lag:.6f}\n"
    )


DRAIN_BYTES = 64 * 1024
"""A refused request's body up to this size is read and dropped (the connection stays)."""


def _body_size(scope: Scope) -> int | None:
    """The declared body size: 0 without one, None when chunked or not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
        if name == b"transfer-encoding":
            return None
    return 0
