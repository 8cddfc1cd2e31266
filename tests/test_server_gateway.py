"""The stateful chat gateway over a real socket, with the official ``openai`` client and
the local fake upstream: budgeted context, streaming, two turns at once, cancel,
disconnects and upstream failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from openai import APIError, AsyncOpenAI

from chatstate.context.tokens import counter_for
from chatstate.server import ServerConfig, create_app, create_key
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store
from helpers.fake_openai import FakeOpenAI, RecordedRequest
from test_server_support import LiveServer, auth, live_server

WORDS = "the parcel left the depot on monday and should reach the customer within days".split()


@dataclass
class Rig:
    live: LiveServer
    fake: FakeOpenAI
    store: Store
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.key)

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.live.base_url + "/v1", api_key=self.key, max_retries=0)

    async def log(self, session_id: str) -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=self.live.base_url, headers=self.headers) as c:
            r = await c.get(f"/v1/sessions/{session_id}/events", params={"limit": 1000})
            return list(r.json()["data"])


@contextlib.asynccontextmanager
async def rig(fake: FakeOpenAI, **settings: object) -> AsyncIterator[Rig]:
    store = MemoryStore()
    key = await create_key(store, tenant="acme", scopes="read,write,admin")
    config = ServerConfig(
        dev_mode=False,
        upstream_base_url=fake.base_url,
        lease_seconds=1.0,
        **settings,  # type: ignore[arg-type]
    )
    try:
        async with live_server(create_app(config, store=store)) as live:
            yield Rig(live, fake, store, key)
    finally:
        await store.close()


def _numbered_reply(request: RecordedRequest) -> str:
    last = str(request.messages[-1].get("content"))
    return f"About {last}: " + " ".join(WORDS * 3)


async def test_thirty_turns_send_only_the_newest_message() -> None:
    budget = 600
    count = counter_for("gpt-4o").count
    with FakeOpenAI(_numbered_reply, chunk_words=5) as fake:
        async with rig(fake, context_budget=budget) as r:
            client = r.client()
            for turn in range(30):
                question = f"question {turn} about order {1000 + turn}"
                messages = [{"role": "user", "content": question}]
                if turn % 2:
                    stream = await client.chat.completions.create(
                        model="gpt-4o",
                        messages=messages,
                        stream=True,  # type: ignore[arg-type]
                        extra_body={"session_id": "conv"},
                    )
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    )
                else:
                    done = await client.chat.completions.create(
                        model="gpt-4o",
                        messages=messages,
                        extra_body={"session_id": "conv"},  # type: ignore[arg-type]
                    )
                    text = done.choices[0].message.content or ""
                assert text == f"About {question}: " + " ".join(WORDS * 3)
                sent = fake.requests[-1].messages
                assert sent[-1] == {"role": "user", "content": question}
                assert sum(count(str(m.get("content") or "")) for m in sent) <= budget
                if turn:
                    previous = f"question {turn - 1} about order {999 + turn}"
                    assert any(previous in str(m.get("content")) for m in sent)
            assert len(fake.requests[-1].messages) < 30  # a budgeted slice, not the history
            await client.close()
            log = [e for e in await r.log("conv") if e["kind"] == "message"]
            assert [e["role"] for e in log] == ["user", "assistant"] * 30
            assert all(e["data"]["chatstate"]["status"] == "complete" for e in log[1::2])


async def test_session_header_new_session_and_tool_round_trip() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
    from helpers.fake_openai import FakeReply

    with FakeOpenAI(FakeReply(content=None, tool_calls=(call,))) as fake:
        async with rig(fake) as r:
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                body = {"model": "m", "messages": [{"role": "user", "content": "where?"}]}
                first = await c.post("/v1/chat/completions", json=body)
                assert first.status_code == 200
                sid = first.headers["x-session-id"]  # no id sent: a new session
                assert first.json()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"
                fake.set_reply("It is in Lyon.")
                result = {"role": "tool", "tool_call_id": "call_1", "content": "Lyon"}
                second = await c.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [result]},
                    headers={"X-Session-Id": sid},
                )
                assert second.json()["choices"][0]["message"]["content"] == "It is in Lyon."
            sent = fake.requests[-1].messages
            assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
            kinds = [e["kind"] for e in await r.log(sid)]
            assert kinds == ["message", "tool_call", "tool_result", "message"]


@dataclass
class Stream:
    response: httpx.Response
    lines: AsyncIterator[str]

    async def data(self, n: int) -> list[str]:
        """The next ``n`` ``data:`` lines."""
        out: list[str] = []
        async for line in self.lines:
            if line.startswith("data:"):
                out.append(line)
                if len(out) >= n:
                    break
        return out

    async def rest(self) -> list[str]:
        return [line async for line in self.lines]


async def open_stream(
    c: httpx.AsyncClient, body: dict[str, object], headers: dict[str, str] | None = None
) -> Stream:
    request = c.build_request("POST", "/v1/chat/completions", json=body, headers=headers)
    response = await c.send(request, stream=True)
    return Stream(response, response.aiter_lines())


async def test_two_turns_at_once_second_is_rejected_and_retry_attaches() -> None:
    with FakeOpenAI(" ".join(WORDS), chunk_delay=0.05) as fake:
        async with rig(fake) as r:
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s1",
                "messages": [{"role": "user", "content": "first"}],
            }
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                key = {"Idempotency-Key": "turn-1"}
                stream = await open_stream(c, body, key)
                await stream.data(2)
                first = stream.response
                other = {**body, "messages": [{"role": "user", "content": "second"}]}
                clash = await c.post("/v1/chat/completions", json=other)
                assert clash.status_code == 409
                assert clash.json()["error"]["code"] == "turn_in_progress"
                retry = await c.post("/v1/chat/completions", json=body, headers=key)
                assert retry.headers["x-response-id"] == first.headers["x-response-id"]
                events = [ln for ln in retry.text.splitlines() if ln.startswith("event:")]
                assert events == ["event: done"]
                await first.aclose()
                again = await c.post("/v1/chat/completions", json=body, headers=key)
                assert again.headers["x-response-id"] == first.headers["x-response-id"]
            assert len(fake.requests) == 1
            roles = [e["role"] for e in await r.log("s1")]
            assert roles == ["user", "assistant"]


async def test_racing_turns_never_interleave() -> None:
    with FakeOpenAI("fine", chunk_delay=0.01) as fake:
        async with rig(fake) as r:
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                for round_ in range(5):
                    bodies = [
                        {
                            "model": "m",
                            "session_id": "race",
                            "messages": [{"role": "user", "content": f"r{round_} c{i}"}],
                        }
                        for i in range(2)
                    ]
                    got = await asyncio.gather(
                        *(c.post("/v1/chat/completions", json=b) for b in bodies)
                    )
                    codes = sorted(g.status_code for g in got)
                    assert codes in ([200, 409], [200, 200]), codes
            log = await r.log("race")
            roles = [e["role"] for e in log]
            assert roles == ["user", "assistant"] * (len(roles) // 2)
            for user, answer in zip(log[::2], log[1::2], strict=True):
                assert (
                    user["data"]["chatstate"]["response_id"]
                    == answer["data"]["chatstate"]["response_id"]
                )


async def test_cancel_stops_generation_and_keeps_the_partial_answer() -> None:
    reply = " ".join(WORDS * 4)
    with FakeOpenAI(reply, chunk_delay=0.05) as fake:
        async with rig(fake) as r:
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s1",
                "messages": [{"role": "user", "content": "go"}],
            }
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                stream = await open_stream(c, body)
                await stream.data(3)
                rid = stream.response.headers["x-response-id"]
                cancel = await c.post(f"/v1/responses/{rid}/cancel")
                assert cancel.json() == {"id": rid, "status": "cancelled"}
                rest = await stream.rest()
                assert rest.count("event: cancelled") == 1
                await stream.response.aclose()
            answer = (await r.log("s1"))[-1]
            assert answer["data"]["chatstate"]["status"] == "cancelled"
            assert answer["content"] and reply.startswith(answer["content"])
            assert answer["content"] != reply


async def test_an_upstream_stream_cut_without_done_is_stored_incomplete() -> None:
    """The upstream closes its connection after two chunks, before a finish_reason and
    ``[DONE]``: the partial answer is kept and marked incomplete, never stored as whole."""
    reply = " ".join(WORDS)
    with FakeOpenAI(reply) as fake:
        fake.disconnect(after_chunks=2)
        async with rig(fake) as r:
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s1",
                "messages": [{"role": "user", "content": "go"}],
            }
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                stream = await open_stream(c, body)
                rest = await stream.rest()
                assert "event: incomplete" in rest
                assert "data: [DONE]" not in rest
                rid = stream.response.headers["x-response-id"]
                assert (await c.get(f"/v1/responses/{rid}")).json()["status"] == "incomplete"
            answer = (await r.log("s1"))[-1]
            assert answer["data"]["chatstate"]["status"] == "incomplete"
            assert answer["content"] and reply.startswith(answer["content"])
            assert answer["content"] != reply


async def test_disconnect_does_not_stop_generation() -> None:
    reply = " ".join(WORDS)
    with FakeOpenAI(reply, chunk_delay=0.03) as fake:
        async with rig(fake) as r:
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s1",
                "messages": [{"role": "user", "content": "go"}],
            }
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                stream = await open_stream(c, body)
                await stream.data(2)
                rid = stream.response.headers["x-response-id"]
                await stream.response.aclose()
                for _ in range(100):
                    status = (await c.get(f"/v1/responses/{rid}")).json()["status"]
                    if status != "in_progress":
                        break
                    await asyncio.sleep(0.05)
                assert status == "done"
            answer = (await r.log("s1"))[-1]
            assert answer["content"] == reply
            assert answer["data"]["chatstate"]["status"] == "complete"


async def test_upstream_failure_is_reported_and_the_session_goes_on() -> None:
    with FakeOpenAI("recovered") as fake:
        async with rig(fake) as r:
            client = r.client()
            fake.fail(500)
            with pytest.raises(APIError) as failed:
                await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "a"}],
                    extra_body={"session_id": "s1"},
                )
            assert failed.value.code in ("upstream_error", None) or "upstream" in str(failed.value)
            fake.fail(503)
            with pytest.raises(APIError):
                stream = await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "b"}],
                    stream=True,
                    extra_body={"session_id": "s1"},
                )
                async for _ in stream:
                    pass
            ok = await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "c"}],
                extra_body={"session_id": "s1"},
            )
            assert ok.choices[0].message.content == "recovered"
            await client.close()
            assert [e["content"] for e in await r.log("s1")] == ["a", "b", "c", "recovered"]


async def test_shutdown_marks_running_streams_incomplete() -> None:
    reply = " ".join(WORDS * 4)
    with FakeOpenAI(reply, chunk_delay=0.05) as fake:
        async with rig(fake) as r:
            body = {
                "model": "m",
                "stream": True,
                "session_id": "s1",
                "messages": [{"role": "user", "content": "go"}],
            }
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                stream = await open_stream(c, body)
                await stream.data(3)
                await r.live.app.state.services.gateway.aclose(grace=0.0)
                rest = await stream.rest()
                assert rest.count("event: incomplete") == 1
                await stream.response.aclose()
            answer = (await r.log("s1"))[-1]
            assert answer["data"]["chatstate"]["status"] == "incomplete"
            assert reply.startswith(answer["content"])
