"""Resumable streams: disconnect at random chunks and resume, resume through the retried
request, kill the server mid-stream and resume on a second process, expiry and erasure."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from chatstate.server import ServerConfig, create_app, create_key
from chatstate.server.auth import RESPONSES_TENANT
from chatstate.store.memory import MemoryStore
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import FakeClock
from helpers.fake_openai import FakeOpenAI
from test_server_support import api, auth, live_server, server_process

TEXT = " ".join(f"w{i}" for i in range(40))
TERMINALS = {"done", "error", "cancelled", "incomplete"}


@dataclass(frozen=True)
class SSE:
    id: int
    event: str
    data: str


async def events(lines: AsyncIterator[str]) -> AsyncIterator[SSE]:
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "id" in fields:
                yield SSE(int(fields["id"]), fields.get("event", "message"), fields["data"])
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.strip()


async def read(
    c: httpx.AsyncClient, request: httpx.Request, stop_after: int | None = None
) -> tuple[httpx.Response, list[SSE]]:
    """The events of one connection; with ``stop_after``, hang up after that many."""
    response = await c.send(request, stream=True)
    got: list[SSE] = []
    try:
        async for event in events(response.aiter_lines()):
            got.append(event)
            if stop_after is not None and len(got) >= stop_after:
                break
    finally:
        await response.aclose()
    return response, got


def streamed_text(received: list[SSE]) -> str:
    """The answer text of the chunk events received."""
    text = ""
    for event in received:
        if event.event == "message":
            for choice in json.loads(event.data).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


def body(session: str, text: str = "go") -> dict[str, object]:
    return {
        "model": "m",
        "stream": True,
        "session_id": session,
        "messages": [{"role": "user", "content": text}],
    }


async def test_resume_fuzz_after_random_disconnects() -> None:
    rng = random.Random(1234)
    store = MemoryStore()
    key = await create_key(store, tenant="acme", scopes="read,write")
    with FakeOpenAI(TEXT, chunk_delay=0.004) as fake:
        config = ServerConfig(dev_mode=False, upstream_base_url=fake.base_url)
        async with (
            live_server(create_app(config, store=store)) as live,
            httpx.AsyncClient(base_url=live.base_url, headers=auth(key)) as c,
        ):
            for trial in range(6):
                first = c.build_request("POST", "/v1/chat/completions", json=body(f"s{trial}"))
                cuts = rng.randint(1, 3)
                response, received = await read(c, first, stop_after=rng.randint(1, 12))
                rid = response.headers["x-response-id"]
                for cut in range(cuts):
                    last = str(received[-1].id)
                    stop = rng.randint(1, 12) if cut < cuts - 1 else None
                    resume = c.build_request(
                        "GET", f"/v1/responses/{rid}/events", headers={"Last-Event-ID": last}
                    )
                    _, more = await read(c, resume, stop_after=stop)
                    received += more
                    if received[-1].event in TERMINALS:
                        break
                if received[-1].event not in TERMINALS:  # the last cut fell after the end
                    again = c.build_request(
                        "GET", f"/v1/responses/{rid}/events", params={"after": received[-1].id}
                    )
                    received += (await read(c, again))[1]
                replay = (await read(c, c.build_request("GET", f"/v1/responses/{rid}/events")))[1]
                assert received == replay
                assert [e.id for e in received] == list(range(1, len(received) + 1))
                assert [e.event for e in received].count("done") == 1
                assert sum(e.event in TERMINALS for e in received) == 1
    await store.close()


async def test_retry_with_the_same_key_resumes_after_last_event_id() -> None:
    with FakeOpenAI(TEXT, chunk_delay=0.005) as fake:
        config = ServerConfig(dev_mode=True, upstream_base_url=fake.base_url)
        store = MemoryStore()
        async with (
            live_server(create_app(config, store=store)) as live,
            httpx.AsyncClient(base_url=live.base_url) as c,
        ):
            key = {"Idempotency-Key": "turn-1"}
            first = c.build_request("POST", "/v1/chat/completions", json=body("s1"), headers=key)
            _, head = await read(c, first, stop_after=5)
            retry = c.build_request(
                "POST",
                "/v1/chat/completions",
                json=body("s1"),
                headers=key | {"Last-Event-ID": str(head[-1].id)},
            )
            _, tail = await read(c, retry)
            assert [e.id for e in head + tail] == list(range(1, len(head + tail) + 1))
            assert tail[-1].event == "done"
            log = (await c.get("/v1/sessions/s1/events")).json()["data"]
            assert [e["role"] for e in log] == ["user", "assistant"]
            assert len(fake.requests) == 1
        await store.close()


async def test_kill_the_server_mid_stream_and_resume_on_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    logs = tmp_path / "server.log"
    with FakeOpenAI(TEXT, chunk_delay=0.1) as fake:
        with server_process(url, fake.base_url, logs) as one:
            async with httpx.AsyncClient(base_url=one.base_url, timeout=10) as c:
                key = {"Idempotency-Key": "turn-1"}
                first = c.build_request(
                    "POST", "/v1/chat/completions", json=body("s1", "hello"), headers=key
                )
                response, seen = await read(c, first, stop_after=4)
                rid = response.headers["x-response-id"]
                one.kill()  # kill -9 while the upstream is still streaming
        with server_process(url, fake.base_url, logs) as two:
            async with httpx.AsyncClient(base_url=two.base_url, timeout=10) as c:
                retry = c.build_request(
                    "POST",
                    "/v1/chat/completions",
                    json=body("s1", "hello"),
                    headers=key | {"Last-Event-ID": str(seen[-1].id)},
                )
                # The new process ends the stream once the dead producer's lease runs out;
                # the bound only stops a hang, it says nothing about the machine's speed.
                async with asyncio.timeout(120):
                    response, rest = await read(c, retry)
                assert response.headers["x-response-id"] == rid
                received = seen + rest
                assert [e.id for e in received] == list(range(1, len(received) + 1))
                assert received[-1].event == "incomplete"
                assert sum(e.event in TERMINALS for e in received) == 1
                log = (await c.get("/v1/sessions/s1/events")).json()["data"]
                assert [e["role"] for e in log] == ["user", "assistant"]  # each exactly once
                partial = log[-1]
                assert partial["data"]["chatstate"]["status"] == "incomplete"
                assert TEXT.startswith(partial["content"]) and partial["content"] != TEXT
                # Clients only ever get flushed chunks: what this one received before and
                # after the kill is exactly the stored partial answer (the unflushed tail
                # that died with the process was never sent to anyone).
                assert streamed_text(received) == partial["content"]
                fake.set_reply("next answer")
                nxt = await c.post(
                    "/v1/chat/completions",
                    json={**body("s1", "again"), "stream": False},
                )
                assert nxt.json()["choices"][0]["message"]["content"] == "next answer"


async def test_response_logs_expire_with_410_and_go_with_their_session() -> None:
    clock = FakeClock()
    store = MemoryStore(StoreConfig(clock=clock))
    with FakeOpenAI("short answer") as fake:
        config = ServerConfig(
            dev_mode=False,
            key_cache_seconds=0,
            upstream_base_url=fake.base_url,
            response_ttl_seconds=30,
        )
        async with api(config, store) as a:
            h = await a.key("acme")
            ids = []
            for session in ("s1", "s2"):
                r = await a.client.post(
                    "/v1/chat/completions", json={**body(session), "stream": False}, headers=h
                )
                ids.append(r.headers["x-response-id"])
            assert (await a.client.get(f"/v1/responses/{ids[0]}", headers=h)).json()[
                "status"
            ] == "done"
            await a.client.delete("/v1/sessions/s2", headers=h)
            assert (await a.client.get(f"/v1/responses/{ids[1]}", headers=h)).status_code == 404
            left = await store.list_sessions(tenant_id=RESPONSES_TENANT)
            assert [s.id for s in left.items] == [ids[0]]
            clock.advance(31)
            gone = await a.client.get(f"/v1/responses/{ids[0]}/events", headers=h)
            assert gone.status_code == 410 and gone.json()["error"] == "response_expired"
