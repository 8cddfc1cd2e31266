"""Gateway load: streamed turns through one in-process server, store calls counted.

``python -m chatstate.bench load --gateway --sessions 8 --duration 20`` starts, in this
process and on 127.0.0.1 only, a fake OpenAI-compatible upstream that streams
``--chunks`` chunks (200) an answer, ``--chunk-delay`` seconds apart, and a ``chatstate``
server on a fresh SQLite file (``--database`` to choose the URL) whose store is wrapped
in a :class:`~chatstate.testing.counting.CountingStore`. Each of ``--sessions`` sessions
runs turns back to back (a session takes one turn at a time, by design) for
``--duration`` seconds: a streamed ``POST /v1/chat/completions`` read to its terminal
event. Reported: turns per second, p50/p99 of a turn (request to terminal event), store
calls per turn (request path and background apart), and the history checker of
:mod:`chatstate.testing.history` over every message acknowledged (each turn's input and
its answer, unique texts) against the final logs, plus a check that each log alternates
user and assistant. Client, server and upstream share one event loop: compare runs with
each other, not with a server on its own cores.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatstate.testing.counting import CountingStore
from chatstate.testing.history import Anomaly, Op, check_history

if TYPE_CHECKING:
    import httpx

__all__ = ["GatewayReport", "run_gateway_load"]


@dataclass
class GatewayReport:
    turns: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    request_calls: int = 0
    background_calls: int = 0
    calls_by_method: Counter[str] = field(default_factory=Counter)
    anomalies: list[Anomaly] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0

    def lines(self) -> list[str]:
        per = max(self.turns, 1)
        return [
            f"turns: {self.turns:,} in {self.seconds:.1f} s = {self.turns / self.seconds:.1f}/s"
            f", failed {dict(self.failed)}",
            f"turn ms: p50 {self.percentile(0.5):.0f}, p99 {self.percentile(0.99):.0f}",
            f"store calls per turn: {self.request_calls / per:.1f} on the request path, "
            f"{self.background_calls / per:.1f} in the background; "
            + ", ".join(f"{m} {n / per:.1f}" for m, n in self.calls_by_method.most_common()),
            f"consistency: {len(self.anomalies)} anomalies",
        ]


class _Upstream:
    """A minimal OpenAI-compatible streaming endpoint: ``chunks`` words an answer,
    the first naming the question so every answer is unique."""

    def __init__(self, chunks: int, delay: float) -> None:
        self.chunks, self.delay = chunks, delay
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = json.loads(await reader.readexactly(length))
            question = str(body["messages"][-1].get("content", ""))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            words = [f"answer-to-{question}"] + [f"w{i}" for i in range(1, self.chunks - 1)]
            for i, word in enumerate(words):
                delta = {"content": (" " if i else "") + word}
                writer.write(_sse({"choices": [{"index": 0, "delta": delta}]}))
                await writer.drain()
                if self.delay:
                    await asyncio.sleep(self.delay)
            writer.write(_sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, KeyError):
            pass
        finally:
            writer.close()


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def run_gateway_load(
    *,
    sessions: int,
    duration: float,
    chunks: int = 200,
    chunk_delay: float = 0.002,
    database: str | None = None,
    flush_seconds: float | None = None,
) -> GatewayReport:
    import httpx  # noqa: PLC0415 - the [server] extra brings these
    import uvicorn  # noqa: PLC0415

    from chatstate.server import ServerConfig, create_app  # noqa: PLC0415
    from chatstate.store.url import open_store  # noqa: PLC0415

    report = GatewayReport()
    upstream = _Upstream(chunks, chunk_delay)
    with tempfile.TemporaryDirectory(prefix="chatstate-gw-") as tmp:
        url = database or f"sqlite:///{Path(tmp) / 'gateway.db'}"
        counting = CountingStore(await open_store(url))
        settings: dict[str, object] = {}
        if flush_seconds is not None:
            settings["stream_flush_seconds"] = flush_seconds
        config = ServerConfig(
            dev_mode=True,
            upstream_base_url=await upstream.start(),
            context_budget=2000,
            rate_per_second=1e6,
            rate_burst=10**6,
            **settings,  # type: ignore[arg-type]
        )
        app = create_app(config, store=counting.store)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
            limits = httpx.Limits(max_connections=sessions * 2 + 4)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
                ops = await _drive(client, report, counting, sessions, duration)
                await asyncio.sleep(1.0)  # after-turn work of the last turns
                final = {s: await _messages(client, s) for s in {op.session for op in ops}}
            report.anomalies = check_history(ops, {s: [v for _, v in m] for s, m in final.items()})
            report.anomalies += _alternation(final)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)
            sock.close()
            await counting.inner.close()
            await upstream.close()
    return report


async def _drive(
    client: httpx.AsyncClient,
    report: GatewayReport,
    counting: CountingStore,
    sessions: int,
    duration: float,
) -> list[Op]:
    import httpx  # noqa: PLC0415

    run = uuid.uuid4().hex[:6]
    ops: list[Op] = []
    counting.reset()
    deadline = time.perf_counter() + duration

    async def session(n: int) -> None:
        name = f"gw-{run}-{n}"
        turn = 0
        while time.perf_counter() < deadline:
            question = f"{name}-t{turn}"
            turn += 1
            started, begin = time.time_ns(), time.perf_counter()
            body = {
                "model": "gpt-4o",
                "session_id": name,
                "stream": True,
                "messages": [{"role": "user", "content": question}],
            }
            terminal, text = "", ""
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        report.failed[str(r.status_code)] += 1
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith("event:"):
                            terminal = line[6:].strip()
                        elif line.startswith("data:") and not terminal:
                            for c in json.loads(line[5:]).get("choices", []):
                                text += c.get("delta", {}).get("content") or ""
            except httpx.HTTPError as exc:
                report.failed[type(exc).__name__] += 1
                ops.append(Op("append", name, False, value=question))
                continue
            ended = time.time_ns()
            ok = terminal == "done"
            ops.append(Op("append", name, True, value=question, started=started, ended=ended))
            ops.append(Op("append", name, ok, value=text, started=started, ended=ended))
            if ok:
                report.turns += 1
                report.latencies_ms.append((time.perf_counter() - begin) * 1e3)
            else:
                report.failed[terminal or "no terminal"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(session(n) for n in range(sessions)))
    report.seconds = time.perf_counter() - start
    report.request_calls = sum(counting.request_path().values())
    report.background_calls = sum(counting.background().values())
    report.calls_by_method = counting.request_path() + counting.background()
    return ops


async def _messages(client: httpx.AsyncClient, session: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    after = 0
    while True:
        r = await client.get(
            f"/v1/sessions/{session}/events", params={"after": after, "limit": 1000}
        )
        r.raise_for_status()
        page = r.json()["data"]
        if not page:
            return out
        out += [(str(e["role"]), str(e["content"])) for e in page if e["kind"] == "message"]
        after = page[-1]["seq"]


def _alternation(final: dict[str, list[tuple[str, str]]]) -> list[Anomaly]:
    out = []
    for session, messages in final.items():
        roles = [role for role, _ in messages]
        if roles != ["user", "assistant"] * (len(roles) // 2):
            out.append(Anomaly("misplaced", session, f"roles out of turn: {roles[:12]}"))
    return out
