"""Request limits and metrics, as plain ASGI middleware and small in-process objects.

* :class:`BodyLimit` answers 413 for a body over the limit: at once when
  ``Content-Length`` says so, otherwise as soon as the streamed body passes it.
* :class:`RateLimiter` is a token bucket per key (per process: with N workers a key gets
  up to N times the rate, unless ``--redis-url`` shares the buckets:
  :mod:`chatstate.server.fleet`).
* :class:`Metrics` counts requests and their latency per method, route template and
  status (templates, never raw paths, so the label set stays bounded) and renders the
  Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatstate.model import JSONValue
from chatstate.server.errors import RateLimited

__all__ = ["BodyLimit", "Metrics", "MetricsMiddleware", "RateLimiter"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _TooBig(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _discard(receive, declared)
                    await _reject(send, self.max_bytes)
                    return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooBig
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooBig:
            if not started:
                await _reject(send, self.max_bytes)


_DISCARD_BYTES = 64 * 1024 * 1024
_DISCARD_SECONDS = 5.0


async def _discard(receive: Receive, declared: int) -> None:
    """Read and drop a refused body before answering (at most 64 MiB and 5 s, as a
    lingering close would): closing a connection with unread bytes resets it, and the
    reset can destroy the 413 before the client reads it."""
    left = min(declared, _DISCARD_BYTES)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DISCARD_SECONDS):
            while left > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                left -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "too_large", "message": f"request body over {limit} bytes"}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Token buckets per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> None:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"rate limit of {self.rate:g} requests per second exceeded",
                retry_after=(1.0 - tokens) / self.rate,
            )
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1.0, now)

    async def acquire(self, key: str) -> None:
        """:meth:`take`, as the routes call it (a shared limiter awaits Redis here)."""
        self.take(key)

    async def aclose(self) -> None:
        """Nothing to release for buckets kept in the process."""


class Metrics:
    """Counters and a latency histogram with bounded labels; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self.counters: dict[str, int] = defaultdict(int)
        """Free counters (``responses_done`` ...), rendered as ``chatstate_<name>_total``."""

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            method = method if method in _METHODS else "OTHER"
            self._requests[(method, route, str(status))] += 1
            buckets = self._latency.setdefault((method, route), [0.0] * (len(_BUCKETS) + 1))
            index = next((i for i, b in enumerate(_BUCKETS) if seconds <= b), len(_BUCKETS))
            buckets[index] += 1
            self._sums[(method, route)] += seconds

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def snapshot(self) -> dict[str, JSONValue]:
        """Every series as JSON, for :meth:`absorb` in another process."""
        with self._lock:
            return {
                "requests": [[*k, n] for k, n in self._requests.items()],
                "latency": [[*k, list(v), self._sums[k]] for k, v in self._latency.items()],
                "counters": dict(self.counters),
            }

    def absorb(self, snapshot: Mapping[str, JSONValue]) -> None:
        """Add another process's :meth:`snapshot` to these series (a fleet's sum)."""
        with self._lock:
            for method, route, status, n in cast("list[list[Any]]", snapshot.get("requests", [])):
                self._requests[(str(method), str(route), str(status))] += int(n)
            for method, route, counts, total in cast(
                "list[list[Any]]", snapshot.get("latency", [])
            ):
                key = (str(method), str(route))
                mine = self._latency.setdefault(key, [0.0] * (len(_BUCKETS) + 1))
                for index, hits in enumerate(counts[: len(mine)]):
                    mine[index] += float(hits)
                self._sums[key] += float(total)
            for name, n in cast("dict[str, int]", snapshot.get("counters", {})).items():
                self.counters[str(name)] += int(n)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP chatstate_http_requests_total HTTP requests by route template.",
                "# TYPE chatstate_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._requests.items()):
                labels = f'method="{method}",route="{route}",status="{status}"'
                lines.append(f"chatstate_http_requests_total{{{labels}}} {n}")
            lines += [
                "# HELP chatstate_http_request_duration_seconds Time to the response start.",
                "# TYPE chatstate_http_request_duration_seconds histogram",
            ]
            for (method, route), counts in sorted(self._latency.items()):
                labels = f'method="{method}",route="{route}"'
                running = 0.0
                for bound, hits in zip((*_BUCKETS, float("inf")), counts, strict=True):
                    running += hits
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    name = "chatstate_http_request_duration_seconds_bucket"
                    lines.append(f'{name}{{{labels},le="{le}"}} {running:g}')
                total = self._sums[(method, route)]
                lines.append(f"chatstate_http_request_duration_seconds_sum{{{labels}}} {total}")
                lines.append(
                    f"chatstate_http_request_duration_seconds_count{{{labels}}} {running:g}"
                )
            for name, n in sorted(self.counters.items()):
                lines += [f"# TYPE chatstate_{name}_total counter", f"chatstate_{name}_total {n}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.metrics.observe(
                    scope.get("method", "?"), template, status, time.perf_counter() - start
                )
            await send(message)

        await self.app(scope, receive, recording)
