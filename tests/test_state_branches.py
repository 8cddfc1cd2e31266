"""The state document belongs to a branch (issue 11, finding 4).

Before, the document was per session: fork ``alt`` at seq 2, set a fact on ``main``, and
``build(branch="alt")`` pinned the fact set on main after the fork. Now each branch has its
own document: a fork starts from the state as it stood at the fork point, and later
changes on either side never show on the other, through the library, the HTTP routes and
the gateway's after-turn keeper.
"""

from __future__ import annotations

import asyncio
import json

from openai import AsyncOpenAI

from chatstate.context.engine import ContextEngine
from chatstate.model import NewEvent
from chatstate.server import ServerConfig, create_app, create_key
from chatstate.state import StateKeeper, facts_of
from chatstate.store.memory import MemoryStore
from chatstate.testing.plugin import MakeStore
from helpers.fake_openai import FakeOpenAI, RecordedRequest
from test_server_support import api, live_server

T = "acme"


def _pins(messages: object, text: str) -> bool:
    return text in json.dumps(messages)


async def test_fork_context_never_pins_the_other_branch_state(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(
        tenant_id=T,
        session_id="s",
        events=[NewEvent.message("user", "hello"), NewEvent.message("assistant", "hi")],
    )
    main = StateKeeper(store)
    await main.set_fact("s", "plan", "gold-tier", tenant_id=T, pinned=True)
    await store.fork(tenant_id=T, session_id="s", new_branch="alt", at_seq=3)
    alt = StateKeeper(store, branch="alt")
    await alt.sync("s", tenant_id=T)  # the fork's document: the state at the fork point
    # Fork at seq 2 as well, before the first fact: nothing of main's state is in it.
    await store.fork(tenant_id=T, session_id="s", new_branch="early", at_seq=2)

    await main.set_fact("s", "city", "Reykjavik", tenant_id=T, pinned=True)  # after the forks
    await alt.set_fact("s", "pet", "axolotl", tenant_id=T, pinned=True)

    engine = ContextEngine(store, auto_compact=False)
    try:
        on_main = await engine.build("s", "next?", tenant_id=T)
        on_alt = await engine.build("s", "next?", tenant_id=T, branch="alt")
        on_early = await engine.build("s", "next?", tenant_id=T, branch="early")
    finally:
        await engine.aclose()
    assert _pins(on_main.messages, "Reykjavik") and not _pins(on_main.messages, "axolotl")
    assert _pins(on_alt.messages, "axolotl") and not _pins(on_alt.messages, "Reykjavik")
    assert _pins(on_main.messages, "gold-tier") and _pins(on_alt.messages, "gold-tier")
    for text in ("gold-tier", "Reykjavik", "axolotl"):
        assert not _pins(on_early.messages, text)


async def test_state_routes_take_the_branch() -> None:
    async with api(ServerConfig(dev_mode=False, key_cache_seconds=0)) as a:
        key = await a.key("acme", "read,write")
        c = a.client
        await c.post("/v1/sessions", json={"id": "s"}, headers=key)
        events = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
        await c.post("/v1/sessions/s/events", json={"events": events}, headers=key)
        facts = "/v1/sessions/s/state/facts"
        r = await c.post(facts, json={"key": "plan", "value": "gold-tier"}, headers=key)
        assert r.status_code == 200
        forked = await c.post(
            "/v1/sessions/s/branches", json={"name": "alt", "at_seq": 3}, headers=key
        )
        assert forked.status_code == 201
        # The fork's document is there at once: the state as it stood at the fork point.
        alt = await c.get("/v1/sessions/s/state", params={"branch": "alt"}, headers=key)
        assert alt.status_code == 200 and "gold-tier" in alt.text
        assert alt.headers["etag"] == '"1"'

        await c.post(facts, json={"key": "city", "value": "Reykjavik"}, headers=key)
        r = await c.post(
            facts, params={"branch": "alt"}, json={"key": "pet", "value": "axolotl"}, headers=key
        )
        assert r.status_code == 200 and "axolotl" in r.text and "Reykjavik" not in r.text
        main = await c.get("/v1/sessions/s/state", headers=key)
        alt = await c.get("/v1/sessions/s/state", params={"branch": "alt"}, headers=key)
        assert "Reykjavik" in main.text and "axolotl" not in main.text
        assert "axolotl" in alt.text and "Reykjavik" not in alt.text

        # PUT replaces one branch's document only, conditional on that branch's version.
        version = alt.headers["etag"]
        put = await c.put(
            "/v1/sessions/s/state",
            params={"branch": "alt"},
            json={"data": {"note": "alt only"}},
            headers={**key, "If-Match": version},
        )
        assert put.status_code == 200, put.text
        stale = await c.put(
            "/v1/sessions/s/state",
            params={"branch": "alt"},
            json={"data": {"note": "late"}},
            headers={**key, "If-Match": version},
        )
        assert stale.status_code == 412
        main = await c.get("/v1/sessions/s/state", headers=key)
        assert "alt only" not in main.text and "Reykjavik" in main.text

        ctx = await c.post(
            "/v1/sessions/s/context", json={"message": "next?", "branch": "alt"}, headers=key
        )
        assert ctx.status_code == 200 and "Reykjavik" not in ctx.text

        missing = await c.get("/v1/sessions/s/state", params={"branch": "nope"}, headers=key)
        assert missing.status_code == 404
        assert "branch" in missing.text.lower(), missing.text

        # Health reads the branch it is asked about: the fork's turns, not main's.
        more = [{"role": "user", "content": "on alt"}, {"role": "assistant", "content": "ok"}]
        await c.post(
            "/v1/sessions/s/events", params={"branch": "alt"}, json={"events": more}, headers=key
        )
        main_health = await c.get("/v1/sessions/s/health", headers=key)
        alt_health = await c.get("/v1/sessions/s/health", params={"branch": "alt"}, headers=key)
        assert main_health.status_code == alt_health.status_code == 200
        assert [t["seq"] for t in main_health.json()["turns"]] == [1, 2]
        alt_seqs = [t["seq"] for t in alt_health.json()["turns"]]
        assert alt_seqs[:2] == [1, 2] and len(alt_seqs) == 4
        gone = await c.get("/v1/sessions/s/health", params={"branch": "nope"}, headers=key)
        assert gone.status_code == 404

        spec = (await c.get("/openapi.json")).json()
        params = spec["paths"]["/v1/sessions/{session_id}/state"]["get"]["parameters"]
        branch = next(p for p in params if p["name"] == "branch")
        assert branch["in"] == "query" and "own document" in branch["description"]


def _echo(request: RecordedRequest) -> str:
    return f"noted: {request.messages[-1].get('content')}"


async def test_a_gateway_turn_syncs_the_state_of_its_own_branch() -> None:
    store = MemoryStore()
    key = await create_key(store, tenant="acme", scopes="read,write")
    with FakeOpenAI(_echo) as fake:
        config = ServerConfig(dev_mode=False, upstream_base_url=fake.base_url)
        try:
            async with live_server(create_app(config, store=store)) as live:
                client = AsyncOpenAI(base_url=live.base_url + "/v1", api_key=key, max_retries=0)
                await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "hello"}],
                    extra_body={"session_id": "g"},
                )
                await store.fork(tenant_id="acme", session_id="g", new_branch="alt")
                await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "My name is Maria Lopez."}],
                    extra_body={"session_id": "g", "branch": "alt"},
                )
                await client.close()
                for _ in range(200):  # the keeper runs after the answer, off the request
                    alt = await store.get_state(tenant_id="acme", session_id="g", branch="alt")
                    if "name" in facts_of(alt.data):
                        break
                    await asyncio.sleep(0.02)
                main = await store.get_state(tenant_id="acme", session_id="g")
                assert facts_of(alt.data)["name"].value == "Maria Lopez"
                assert "name" not in facts_of(main.data)
        finally:
            await store.close()
