"""RELIABILITY case 20 on behaviour: over the bound, requests are refused at once with 503
and ``Retry-After``, in-flight work never exceeds the bound, nothing acknowledged is lost,
and the probes still answer. (Latency figures at twice saturation: docs/reliability.md.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from chatstate.errors import ValidationError
from chatstate.model import AppendResult, NewEvent
from chatstate.server import ServerConfig, create_app
from chatstate.server.admission import Admission, Gate, LagControl
from chatstate.store import MemoryStore
from test_server_support import live_server

LIMIT = 4


class HeldStore(MemoryStore):
    """Appends wait at a gate, so requests stay in flight as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.inside = 0
        self.most_inside = 0

    async def append(self, *, events: Sequence[NewEvent], **kwargs: object) -> AppendResult:  # type: ignore[override]
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.gate.wait()
            return await super().append(events=events, **kwargs)  # type: ignore[arg-type]
        finally:
            self.inside -= 1


async def test_over_the_bound_requests_get_503_at_once_and_nothing_acknowledged_is_lost() -> None:
    store = HeldStore()
    config = ServerConfig(
        dev_mode=True, max_in_flight=LIMIT, rate_per_second=10_000, rate_burst=10_000
    )
    app = create_app(config, store=store)
    async with live_server(app) as server:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as c:
            store.gate.set()
            await c.post("/v1/sessions", json={"id": "s"})
            store.gate.clear()

            async def send(i: int) -> httpx.Response:
                body = {"events": [{"role": "user", "content": f"message {i}"}]}
                return await c.post("/v1/sessions/s/events", json=body)

            tasks = [asyncio.create_task(send(i)) for i in range(40)]
            # The refused ones come back while the admitted ones are still held.
            for _ in range(2000):
                if sum(t.done() for t in tasks) >= 40 - LIMIT:
                    break
                await asyncio.sleep(0.01)
            done = [t.result() for t in tasks if t.done()]
            assert len(done) == 40 - LIMIT and store.inside == LIMIT
            assert all(r.status_code == 503 for r in done)
            assert all(r.headers["retry-after"] == "1" for r in done)
            assert all(r.json()["error"] == "overloaded" for r in done)
            # Probes and scrapes are never refused, even now.
            assert (await c.get("/healthz")).status_code == 200
            scrape = (await c.get("/metrics")).text
            assert f"chatstate_admission_rejected_total {40 - LIMIT}" in scrape
            store.gate.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert app.state.admission.peak == LIMIT and store.most_inside == LIMIT
            acked = sorted(
                r.json()["events"][0]["content"] for r in results if r.status_code == 201
            )
            assert len(acked) == LIMIT
            log = (await c.get("/v1/sessions/s/events")).json()["data"]
            assert sorted(e["content"] for e in log) == acked
            # Once the work is done, the process admits again.
            assert (await send(99)).status_code == 201


async def test_admission_control_can_be_turned_off() -> None:
    store = HeldStore()
    store.gate.set()
    app = create_app(ServerConfig(dev_mode=True, max_in_flight=0), store=store)
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        await c.post("/v1/sessions", json={"id": "s"})
        got = await asyncio.gather(*(c.get("/v1/sessions/s") for _ in range(20)))
        assert {r.status_code for r in got} == {200}


async def test_a_refused_small_body_keeps_the_connection_a_large_one_closes_it() -> None:
    store = HeldStore()
    app = create_app(ServerConfig(dev_mode=True, max_in_flight=1), store=store)
    async with (
        live_server(app) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=60) as held,
        httpx.AsyncClient(base_url=server.base_url, timeout=60) as c,
    ):
        store.gate.set()
        await held.post("/v1/sessions", json={"id": "s"})
        store.gate.clear()
        body = {"events": [{"role": "user", "content": "held"}]}
        holding = asyncio.create_task(held.post("/v1/sessions/s/events", json=body))
        for _ in range(6000):  # the one admitted request reaches the store
            if store.inside:
                break
            await asyncio.sleep(0.01)
        # A small body is read and dropped: the 503 keeps the connection open.
        small = await c.post("/v1/sessions/s/events", json=body)
        assert small.status_code == 503
        assert "connection" not in small.headers
        again = await c.post("/v1/sessions/s/events", json=body)
        assert again.status_code == 503
        # A body over 64 KiB is left unread: the answer says the connection ends.
        big = {"events": [{"role": "user", "content": "x" * 70_000}]}
        large = await c.post("/v1/sessions/s/events", json=big)
        assert large.status_code == 503
        assert large.headers["connection"] == "close"
        store.gate.set()
        assert (await holding).status_code == 201


async def test_streams_have_a_bound_of_their_own() -> None:
    """A gateway stream idling on its upstream does not take the slot of a CPU-bound
    request, nor the other way round; each bound refuses only its own kind."""
    from helpers.fake_openai import FakeOpenAI

    with FakeOpenAI("slow " * 40, chunk_delay=0.05) as fake:
        config = ServerConfig(
            dev_mode=True, upstream_base_url=fake.base_url, max_in_flight=1, max_streams=1
        )
        app = create_app(config, store=MemoryStore())
        async with (
            live_server(app) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as c,
        ):
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s",
                "messages": [{"role": "user", "content": "go"}],
            }
            async with c.stream("POST", "/v1/chat/completions", json=body) as stream:
                assert stream.status_code == 200
                # The stream holds the one stream slot, not the request slot.
                other = {**body, "session_id": "t"}
                refused = await c.post("/v1/chat/completions", json=other)
                assert refused.status_code == 503
                assert "streams in flight" in refused.json()["error"]["message"]
                created = await c.post("/v1/sessions", json={"id": "u"})
                assert created.status_code == 201
                async for _ in stream.aiter_lines():
                    pass
            assert app.state.stream_admission.peak == 1


def test_the_bound_falls_by_a_fifth_when_the_loop_stays_late_and_climbs_when_used() -> None:
    rule = LagControl(floor=4, ceiling=64, target=0.002)
    assert rule.next(20, 0.003, bound_reached=False) == 16
    assert rule.next(4.5, 0.050, bound_reached=True) == 4  # never under the floor
    assert rule.next(20, 0.0005, bound_reached=True) == 25
    assert rule.next(2, 0.0005, bound_reached=True) == 3  # at least one more
    assert rule.next(60, 0.0005, bound_reached=True) == 64  # never over the ceiling
    # Unused, or neither late nor early: unchanged.
    assert rule.next(20, 0.0005, bound_reached=False) == 20
    assert rule.next(20, 0.0015, bound_reached=True) == 20


def test_a_floor_at_or_over_the_limit_is_a_fixed_bound() -> None:
    assert Gate(4, floor=4).control is None and Gate(4, floor=4).bound == 4
    assert Gate(1, floor=4).bound == 1
    adaptive = Gate(64, floor=4)
    assert adaptive.control is not None and adaptive.bound == 4  # starts at the floor
    with pytest.raises(ValidationError):
        ServerConfig(min_in_flight=0)


async def _hammer(admission: Admission, clients: int, seconds: float) -> dict[int, int]:
    """``clients`` closed-loop callers of ``admission`` for ``seconds``; statuses counted.
    A refused caller waits 5 ms before it asks again."""
    statuses: dict[int, int] = {}
    scope = {"type": "http", "path": "/v1/sessions/s/events", "method": "POST", "headers": []}
    end = time.monotonic() + seconds

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def client() -> None:
        status: list[int] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        while time.monotonic() < end:
            await admission(scope, receive, send)
            code = status.pop()
            statuses[code] = statuses.get(code, 0) + 1
            if code == 503:
                await asyncio.sleep(0.005)

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def _answer(send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_requests_waiting_on_io_raise_the_bound_cpu_bound_ones_keep_it_at_the_floor() -> None:
    """The adaptive bound admits many requests that wait on I/O (the loop stays on time)
    and few that work on the loop (each makes the others late)."""

    async def waits_on_io(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.05)  # a remote database, say
        await _answer(send)

    io_gate = Gate(64, floor=4)
    statuses = await _hammer(Admission(waits_on_io, gate=io_gate), clients=48, seconds=1.5)
    # A fixed bound of 4 admits at most 4 at a time; here the loop stayed on time.
    assert io_gate.peak >= 16, (io_gate.peak, io_gate.bound, statuses)

    async def works_on_the_loop(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(2):
            end = time.perf_counter() + 0.005
            while time.perf_counter() < end:  # 5 ms of CPU, then yield
                pass
            await asyncio.sleep(0)
        await _answer(send)

    cpu_gate = Gate(64, floor=4)
    statuses = await _hammer(Admission(works_on_the_loop, gate=cpu_gate), clients=48, seconds=1.0)
    assert statuses.get(201, 0) > 0 and statuses.get(503, 0) > 0
    assert cpu_gate.peak <= 8, (cpu_gate.peak, cpu_gate.bound, statuses)
    assert cpu_gate.bound <= 8
