"""A gateway turn can be neither lost nor doubled (issue 11, item 7 (a)-(e)).

Each test drives the official ``openai`` client over a real socket against the local fake
upstream: a failed response-log creation, state writes while a turn is open, a reused
Idempotency-Key with another message, identical concurrent retries, and a session id
created again after its first incarnation expired. (b) and (e) run on every backend;
(a) and (d) wrap the memory store to fail or slow down the response log's creation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import APIStatusError, AsyncOpenAI

from chatstate.errors import BackendUnavailable
from chatstate.model import JSONValue, Session
from chatstate.server import ServerConfig, create_app, create_key
from chatstate.server.auth import RESPONSES_TENANT
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.testing.counting import CountingStore
from chatstate.testing.plugin import MakeStore
from helpers.fake_openai import FakeOpenAI, FakeReply, RecordedRequest
from test_server_support import LiveServer, auth, live_server


class FlakyLogStore(MemoryStore):
    """Fails the next ``failures`` creations of a response log (a transient outage that
    strikes after the turn's input was stored), and holds each creation ``delay`` seconds
    (a slow store: a twin request then finds the input stored and no log yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.delay = 0.0

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        if tenant_id == RESPONSES_TENANT and self.failures:
            self.failures -= 1
            raise BackendUnavailable("injected: the store is briefly unavailable")
        if tenant_id == RESPONSES_TENANT:
            await asyncio.sleep(self.delay)
        return await super().create_session(
            tenant_id=tenant_id,
            session_id=session_id,
            user_id=user_id,
            metadata=metadata,
            ttl_seconds=ttl_seconds,
        )


@dataclass
class Rig:
    live: LiveServer
    store: Store
    key: str

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.live.base_url + "/v1", api_key=self.key, max_retries=0)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.live.base_url, headers=auth(self.key))

    async def log(self, session_id: str) -> list[dict[str, Any]]:
        async with self.http() as c:
            r = await c.get(f"/v1/sessions/{session_id}/events", params={"limit": 1000})
            return list(r.json()["data"])

    async def chat(self, session_id: str) -> list[str]:
        return [str(e["role"]) for e in await self.log(session_id) if e["kind"] == "message"]


@contextlib.asynccontextmanager
async def rig(fake: FakeOpenAI, store: Store | None = None) -> AsyncIterator[Rig]:
    store = store or MemoryStore()
    key = await create_key(store, tenant="acme", scopes="read,write,admin")
    config = ServerConfig(dev_mode=False, upstream_base_url=fake.base_url, lease_seconds=1.0)
    try:
        async with live_server(create_app(config, store=store)) as live:
            yield Rig(live, store, key)
    finally:
        await store.close()


def echo(request: RecordedRequest) -> str:
    return f"you said {request.messages[-1].get('content')}"


async def ask(
    client: AsyncOpenAI, session: str, text: str, key: str | None = None
) -> tuple[str, str]:
    """One non-streamed turn: (response id, answer text)."""
    done = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": text}],
        extra_body={"session_id": session},
        extra_headers={"Idempotency-Key": key} if key else None,
    )
    return done.id, done.choices[0].message.content or ""


async def test_a_retry_after_the_log_failed_to_be_created_answers_the_turn() -> None:
    store = FlakyLogStore()
    with FakeOpenAI(echo) as fake:
        async with rig(fake, store) as r:
            client = r.client()
            store.failures = 1
            with pytest.raises(APIStatusError) as failed:
                await ask(client, "a1", "hello", key="k-a")
            assert failed.value.status_code == 503  # transient: retry
            assert await r.chat("a1") == ["user"]  # the input is stored, the log is not
            first_id, text = await ask(client, "a1", "hello", key="k-a")
            assert text == "you said hello"
            again_id, again = await ask(client, "a1", "hello", key="k-a")
            assert (again_id, again) == (first_id, "you said hello")
            assert len(fake.requests) == 1
            assert await r.chat("a1") == ["user", "assistant"]
            await client.close()


async def test_a_a_turn_never_started_and_overtaken_tells_the_client_to_resend() -> None:
    store = FlakyLogStore()
    with FakeOpenAI(echo) as fake:
        async with rig(fake, store) as r:
            client = r.client()
            store.failures = 1
            with pytest.raises(APIStatusError) as failed:
                await ask(client, "a3", "lost", key="k-lost")
            assert failed.value.status_code == 503
            # Within 2 x lease_seconds the next turn gets 409 (the log may be on its way);
            # after that, nobody having retried, the branch moves on.
            await asyncio.sleep(2.2)
            assert (await ask(client, "a3", "next", key="k-next"))[1] == "you said next"
            with pytest.raises(APIStatusError) as late:
                await ask(client, "a3", "lost", key="k-lost")
            assert late.value.status_code == 410
            assert "new Idempotency-Key" in late.value.response.text
            assert len(fake.requests) == 1
            await client.close()


async def open_turn(
    r: Rig, client: AsyncOpenAI, session: str, text: str, key: str
) -> tuple[asyncio.Task[tuple[str, str]], str]:
    """Start a turn whose upstream hangs until it is cancelled; once its input is stored,
    the task and its response id (the turn stays open as long as the test needs)."""
    task = asyncio.create_task(ask(client, session, text, key=key))
    for _ in range(400):
        with contextlib.suppress(KeyError, httpx.HTTPError):
            inputs = [e for e in await r.log(session) if e["role"] == "user"]
            if inputs:
                return task, str(inputs[-1]["data"]["chatstate"]["response_id"])
        await asyncio.sleep(0.025)
    raise AssertionError("the turn's input was never stored")


async def cancel(r: Rig, rid: str) -> None:
    async with r.http() as c:
        got = await c.post(f"/v1/responses/{rid}/cancel")
        assert got.status_code == 200, got.text


async def test_b_state_writes_while_a_turn_is_open_do_not_hide_it(make_store: MakeStore) -> None:
    with FakeOpenAI(echo) as fake:
        fake.hang(60.0)  # until cancelled: the turn is open for as long as the test runs
        async with rig(fake, await make_store()) as r:
            client = r.client()
            first, rid = await open_turn(r, client, "b1", "first", key="k-1")
            async with r.http() as c:
                for i in range(24):
                    body = {"op": "set", "key": f"fact{i}", "value": f"v{i}"}
                    got = await c.post("/v1/sessions/b1/state/facts", json=body)
                    assert got.status_code == 200, got.text
            assert len(await r.log("b1")) > 17  # the input is not among the newest 16
            with pytest.raises(APIStatusError) as clash:
                await ask(client, "b1", "second", key="k-2")
            assert clash.value.status_code == 409
            await cancel(r, rid)
            assert (await first)[0] == rid
            assert await r.chat("b1") == ["user"]  # cancelled before any text: no answer
            assert len(fake.requests) == 1
            await client.close()


async def test_c_same_key_other_message_while_the_turn_is_open_is_422() -> None:
    with FakeOpenAI(echo) as fake:
        fake.hang(60.0)
        async with rig(fake) as r:
            client = r.client()
            first, rid = await open_turn(r, client, "c1", "first", key="k-c")
            with pytest.raises(APIStatusError) as mismatch:
                await ask(client, "c1", "something else", key="k-c")
            assert mismatch.value.status_code == 422
            await cancel(r, rid)
            assert (await first)[0] == rid
            with pytest.raises(APIStatusError) as closed:  # as after the turn closes
                await ask(client, "c1", "something else", key="k-c")
            assert closed.value.status_code == 422
            assert len(fake.requests) == 1
            assert await r.chat("c1") == ["user"]
            await client.close()


async def test_d_identical_concurrent_retries_on_a_new_session_never_404() -> None:
    store = FlakyLogStore()
    store.delay = 0.2
    with FakeOpenAI(echo) as fake:
        async with rig(fake, store) as r:
            client = r.client()
            for round_ in range(6):
                session = f"d{round_}"
                got = await asyncio.gather(
                    *(ask(client, session, "hi", key="same") for _ in range(2)),
                    return_exceptions=True,
                )
                for outcome in got:
                    if isinstance(outcome, BaseException):
                        assert isinstance(outcome, APIStatusError), outcome
                        assert outcome.status_code != 404, outcome.body
                        assert outcome.status_code == 409, outcome.body
                    else:
                        assert outcome[1] == "you said hi"
                assert await r.chat(session) == ["user", "assistant"]
            assert len(fake.requests) == 6
            await client.close()


async def test_e_a_session_created_again_never_gets_the_old_answer(make_store: MakeStore) -> None:
    with FakeOpenAI(echo) as fake:
        async with rig(fake, await make_store()) as r:
            client = r.client()
            old_id, old = await ask(client, "e1", "old question", key="k-e")
            assert old == "you said old question"
            await r.store.set_ttl(tenant_id="acme", session_id="e1", ttl_seconds=0.05)
            await asyncio.sleep(0.2)
            assert await r.store.purge_expired() >= 1
            new_id, new = await ask(client, "e1", "new question", key="k-e")
            assert new == "you said new question"
            assert new_id != old_id
            assert len(fake.requests) == 2
            log = await r.log("e1")
            assert [e["content"] for e in log if e["kind"] == "message"] == [
                "new question",
                "you said new question",
            ]
            await client.close()


async def test_a_retry_of_a_first_turn_with_a_system_prompt_replays_it() -> None:
    with FakeOpenAI(echo) as fake:
        async with rig(fake) as r:
            client = r.client()
            messages: list[Any] = [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
            ]
            answers = [
                await client.chat.completions.create(
                    model="m",
                    messages=messages,
                    extra_body={"session_id": "a2"},
                    extra_headers={"Idempotency-Key": "k-first"},
                )
                for _ in range(2)
            ]
            assert answers[0].id == answers[1].id
            assert answers[1].choices[0].message.content == "you said hello"
            assert len(fake.requests) == 1
            assert await r.chat("a2") == ["system", "user", "assistant"]
            await client.close()


async def test_the_gateway_checks_tool_pairing_before_storing_anything() -> None:
    """RELIABILITY case 22 through the gateway: an answer with a tool call, then a user
    message without its result, would be refused by every upstream forever after. It
    gets a 422 naming the call and nothing is stored; the result, then, is accepted."""
    call = {"id": "call_7", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    replies = [FakeReply(content=None, tool_calls=(call,)), FakeReply(content="done")]
    counting = CountingStore(MemoryStore())
    with FakeOpenAI(lambda _r: replies.pop(0)) as fake:
        async with rig(fake, counting.store) as r:
            client = r.client()
            first = await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "use the tool"}],
                extra_body={"session_id": "tp"},
            )
            assert first.choices[0].message.tool_calls
            asked = [
                {"role": "user", "content": "use the tool"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
            ]
            with pytest.raises(APIStatusError) as refused:
                await client.chat.completions.create(
                    model="m",
                    messages=[*asked, {"role": "user", "content": "never mind"}],  # type: ignore[list-item]
                    extra_body={"session_id": "tp"},
                )
            assert refused.value.status_code == 422
            assert "call_7" in refused.value.message, refused.value.message
            kinds = [(e["kind"], e.get("role")) for e in await r.log("tp")]
            assert kinds == [("message", "user"), ("tool_call", "assistant")]
            counting.reset()
            answered = await client.chat.completions.create(
                model="m",
                messages=[*asked, {"role": "tool", "tool_call_id": "call_7", "content": "42"}],  # type: ignore[list-item]
                extra_body={"session_id": "tp"},
            )
            assert answered.choices[0].message.content == "done"
            # The pairing window is the page the open-turn check read: no second read.
            assert counting.request_path()["read_last"] == 0, counting.request_path()
            await client.close()
