"""The service on every backend of the registry: the same answers, response logs and keys
included (they live in the store through the same protocol)."""

from __future__ import annotations

import asyncio

from chatstate.server import ServerConfig
from chatstate.testing.plugin import MakeStore
from helpers.fake_openai import FakeOpenAI
from test_server_support import api


async def test_core_flow_on_every_backend(make_store: MakeStore) -> None:
    store = await make_store()
    with FakeOpenAI("stored answer", chunk_words=1) as fake:
        config = ServerConfig(dev_mode=False, key_cache_seconds=0, upstream_base_url=fake.base_url)
        async with api(config, store) as a:
            mine, other = await a.key("acme"), await a.key("globex")
            url = "/v1/sessions/s1/events"
            await a.client.post("/v1/sessions", json={"id": "s1"}, headers=mine)
            body = {"events": [{"role": "user", "content": "hi 👋"}]}
            key = {"Idempotency-Key": "k1"}
            first = await a.client.post(url, json=body, headers=mine | key)
            again = await a.client.post(url, json=body, headers=mine | key)
            assert (first.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
            stale = await a.client.post(url, json=body, headers=mine | {"If-Match": '"0"'})
            assert stale.status_code == 412
            bad = {"events": [{"role": "user", "content": "nul\u0000"}]}
            assert (await a.client.post(url, json=bad, headers=mine)).status_code == 422
            chat = await a.client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "session_id": "s1",
                    "stream": True,
                    "messages": [{"role": "user", "content": "and?"}],
                },
                headers=mine,
            )
            assert chat.text.count("event: done") == 1
            rid = chat.headers["x-response-id"]
            replay = await a.client.get(f"/v1/responses/{rid}/events?after=2", headers=mine)
            assert replay.text.startswith("id: 3\n") and replay.text.count("event: done") == 1
            # The answer is stored right after the terminal event (the next turn would
            # store it first if it were missing); state events follow it off the path.
            contents: list[object] = []
            for _ in range(100):
                log = (await a.client.get(url, headers=mine)).json()["data"]
                contents = [e["content"] for e in log if e.get("kind", "message") == "message"]
                if len(contents) == 3:
                    break
                await asyncio.sleep(0.05)
            assert contents == ["hi 👋", "and?", "stored answer"]
            for path in ("/v1/sessions/s1", url, f"/v1/responses/{rid}"):
                assert (await a.client.get(path, headers=other)).status_code == 404
            assert (await a.client.delete("/v1/sessions/s1", headers=mine)).status_code == 204
            assert (await a.client.get(f"/v1/responses/{rid}", headers=mine)).status_code == 404
