"""RELIABILITY case 20 on behaviour: over the bound, requests are refused at once with 503
and ``Retry-After``, in-flight work never exceeds the bound, nothing acknowledged is lost,
and the probes still answer. (Latency figures at twice saturation: docs/reliability.md.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from chatstate.model import AppendResult, NewEvent
from chatstate.server import ServerConfig, create_app
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
