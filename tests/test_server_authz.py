"""Object-level authorization: every route of the OpenAPI schema, called with tenant B's
key on tenant A's ids, answers 404 and leaks nothing; tenant A's data is untouched."""

from __future__ import annotations

import asyncio
import re

from chatstate.server import ServerConfig
from helpers.fake_openai import FakeOpenAI
from test_server_support import api

CANARY = "account number 99-CANARY-42"

BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("post", "/v1/sessions/{session_id}/events"): {"events": [{"role": "user", "content": "x"}]},
    ("post", "/v1/sessions/{session_id}/branches"): {"name": "b2", "at_seq": 1},
    ("post", "/v1/sessions/{session_id}/context"): {"message": "what is my account?"},
    ("put", "/v1/sessions/{session_id}/state"): {"data": {"stolen": True}},
    ("put", "/v1/sessions/{session_id}/ttl"): {"ttl_seconds": 1},
    ("post", "/v1/sessions/{session_id}/state/facts"): {"key": "account", "value": "stolen"},
}


async def test_every_route_gives_404_for_another_tenants_ids() -> None:
    with FakeOpenAI("Noted: " + CANARY) as fake:
        config = ServerConfig(dev_mode=False, key_cache_seconds=0, upstream_base_url=fake.base_url)
        async with api(config) as a:
            tenant_a = await a.key("tenant-a", "read,write,admin")
            tenant_b = await a.key("tenant-b", "read,write,admin")
            await a.client.post(
                "/v1/sessions", json={"id": "s1", "user_id": "u1"}, headers=tenant_a
            )
            chat = await a.client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "session_id": "s1",
                    "messages": [{"role": "user", "content": f"my {CANARY}"}],
                },
                headers=tenant_a,
            )
            rid = chat.headers["x-response-id"]
            await a.client.post(
                "/v1/sessions/s1/branches", json={"name": "alt", "at_seq": 1}, headers=tenant_a
            )
            # The state keeper runs after each answer; let it land before taking stock.
            version = 0
            for _ in range(100):
                got = await a.client.get("/v1/sessions/s1/state", headers=tenant_a)
                version = got.json()["version"]
                if version:
                    break
                await asyncio.sleep(0.05)
            before = (await a.client.get("/v1/sessions/s1/events", headers=tenant_a)).json()
            ids = {"session_id": "s1", "response_id": rid, "user_id": "u1"}
            missing = {"session_id": "zz9", "response_id": "resp_" + "0" * 32, "user_id": "zz8"}
            schema = a.app.openapi()
            checked = 0
            for path, operations in schema["paths"].items():
                names = re.findall(r"{(\w+)}", path)
                if not names:
                    continue
                url = path.format(**{n: ids[n] for n in names})
                unknown = path.format(**{n: missing[n] for n in names})
                for method in operations:
                    body = BODIES.get((method, path))
                    r = await a.client.request(method, url, json=body, headers=tenant_b)
                    assert r.status_code == 404, (method, path, r.status_code, r.text)
                    # Exactly what an id that exists nowhere gets: nothing tells them apart.
                    control = await a.client.request(method, unknown, json=body, headers=tenant_b)
                    assert _masked(r.text, ids) == _masked(control.text, missing)
                    assert CANARY not in r.text
                    checked += 1
            assert checked >= 14
            listing = await a.client.get("/v1/sessions", headers=tenant_b)
            assert listing.json()["data"] == []
            after = (await a.client.get("/v1/sessions/s1/events", headers=tenant_a)).json()
            assert after == before
            assert (await a.client.get(f"/v1/responses/{rid}", headers=tenant_a)).is_success
            state = await a.client.get("/v1/sessions/s1/state", headers=tenant_a)
            assert state.json()["version"] == version
            # The same session id in tenant B is another session: the upstream sees none of A.
            fake.set_reply("hello B")
            await a.client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "session_id": "s1",
                    "messages": [{"role": "user", "content": "what did I tell you?"}],
                },
                headers=tenant_b,
            )
            assert CANARY not in str(fake.requests[-1].body)


def _masked(text: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        text = text.replace(value, f"<{name}>")
    return text
