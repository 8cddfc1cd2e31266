"""A request's instructions (leading system/developer messages) through the gateway with a
key that lacks the admin scope, as the OpenAI Agents SDK sends them: every turn carries the
agent's instructions; they instruct that turn and are not stored."""

from __future__ import annotations

import httpx
import pytest
from openai import AsyncOpenAI, UnprocessableEntityError

from chatstate.server import ServerConfig, create_app, create_key
from chatstate.store.memory import MemoryStore
from helpers.fake_openai import FakeOpenAI
from test_server_support import auth, live_server

INSTRUCTIONS = "You are a terse support agent for Parcelly."


async def test_instructions_on_a_read_write_key_instruct_each_turn_and_are_not_stored() -> None:
    store = MemoryStore()
    key = await create_key(store, tenant="acme", scopes="read,write")
    with FakeOpenAI("Noted.") as fake:
        config = ServerConfig(dev_mode=False, upstream_base_url=fake.base_url, lease_seconds=1.0)
        async with live_server(create_app(config, store=store)) as live:
            client = AsyncOpenAI(base_url=live.base_url + "/v1", api_key=key, max_retries=0)
            async with client:
                await _two_turns_and_a_refusal(client, fake)
            async with httpx.AsyncClient(base_url=live.base_url, headers=auth(key)) as c:
                log = (await c.get("/v1/sessions/agent-1/events")).json()["data"]
            chat = [(e["role"], e["content"]) for e in log if e["kind"] == "message"]
            assert chat == [
                ("user", "Where is order 5521?"),
                ("assistant", "Noted."),
                ("user", "And order 5522?"),
                ("assistant", "Noted."),
            ]
    await store.close()


async def _two_turns_and_a_refusal(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    for question in ("Where is order 5521?", "And order 5522?"):
        reply = await client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": question},
            ],
            extra_body={"session_id": "agent-1"},
        )
        assert reply.choices[0].message.content == "Noted."
        sent = fake.requests[-1].messages
        assert sent[0] == {"role": "system", "content": INSTRUCTIONS}
        assert sent[-1]["content"] == question
    with pytest.raises(UnprocessableEntityError):  # instructions alone are not a turn
        await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "developer", "content": INSTRUCTIONS}],
            extra_body={"session_id": "agent-1"},
        )
