"""Admission control: a process works on at most ``limit`` requests at once.

Open-loop load above what one process can serve does not queue without bound (each
request waiting longer than the last until every answer is late); the request over the
bound is answered at once with 503 and ``Retry-After``, before any store or tokenizer
work (a body up to 64 KiB is read and dropped so the connection stays; a larger one is
left unread and the connection closed), so the admitted ones keep their latency.

A request is *in flight* from the moment it is admitted until its response has been sent
in full: a streamed gateway turn counts for as long as it streams. ``/healthz``,
``/readyz`` and ``/metrics`` are never refused (probes and scrapes must see an
overloaded process). The bound is per process; with ``--workers N`` the service admits
up to N times it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from chatstate.server.middleware import Metrics

__all__ = ["EXEMPT_PATHS", "Admission", "Gate"]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


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
    """ASGI middleware bounding in-flight HTTP requests; see the module docstring."""

    def __init__(self, app: ASGIApp, *, gate: Gate, metrics: Metrics | None = None) -> None:
        self.app = app
        self.gate = gate
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if scope["type"] != "http" or gate.limit <= 0 or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if gate.in_flight >= gate.limit:
            gate.rejected += 1
            if self.metrics is not None:
                self.metrics.count("admission_rejected")
            await self._reject(scope, receive, send)
            return
        gate.in_flight += 1
        gate.peak = max(gate.peak, gate.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            gate.in_flight -= 1

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(
            {
                "error": "overloaded",
                "message": f"this process is at its limit of {self.gate.limit} requests "
                f"in flight; retry after {self.gate.retry_after} s",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.gate.retry_after).encode()),
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
