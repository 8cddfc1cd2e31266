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
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from chatstate.server.errors import shaped
from chatstate.server.middleware import Metrics

__all__ = ["EXEMPT_PATHS", "STREAM_PATHS", "Admission", "Gate"]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
STREAM_PATHS = frozenset({"/v1/chat/completions"})
"""Routes counted against the stream bound (``Admission(streams=...)``)."""


class Gate:
    """The count of requests in flight and the bound; one per application."""

    def __init__(self, limit: int, *, retry_after: int = 1) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0
        self.peak = 0
        """The most requests in flight at once since start."""
        self.rejected = 0


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
        if gate.in_flight >= gate.limit:
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
                    "message": f"this process is at its limit of {gate.limit} "
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
