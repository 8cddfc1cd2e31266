"""After each gateway turn, off the request path, the state keeper extracts facts into the
state document (pinned into the next context) and session-health counters reach /metrics."""

from __future__ import annotations

import asyncio
import re

import httpx

from chatstate.context.tokens import counter_for
from helpers.fake_openai import FakeOpenAI
from test_server_gateway import rig


async def test_gateway_turns_feed_state_and_health() -> None:
    with FakeOpenAI("Could you give me your account number?") as fake:
        async with rig(fake) as r, r.client() as client:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Hi, my account number is 48213."}],
                extra_body={"session_id": "st1"},
            )
            doc: dict[str, object] = {}
            for _ in range(50):  # the keeper runs after the answer is stored
                doc = dict((await r.store.get_state(tenant_id="acme", session_id="st1")).data)
                if doc.get("facts"):
                    break
                await asyncio.sleep(0.1)
            assert "48213" in str(doc.get("facts"))
            # The assistant asked again for what the state holds: a re-ask, counted.
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Did you find it?"}],
                extra_body={"session_id": "st1"},
            )
            async with httpx.AsyncClient(base_url=r.live.base_url, headers=r.headers) as c:
                text = ""
                for _ in range(50):
                    text = (await c.get("/metrics")).text
                    if re.search(r'flags_total\{detector="re_ask"\} 2\b', text):
                        break
                    await asyncio.sleep(0.1)
            # Both answers asked for the account number the user had given.
            assert re.search(r'flags_total\{detector="re_ask"\} 2\b', text), text
            # The fact is pinned into what the upstream received on the second turn.
            sent = fake.requests[-1].body["messages"]
            assert any("48213" in str(m.get("content")) for m in sent[:-1])
    assert counter_for("gpt-4o").count("48213") > 0
