"""The store-call budget of one gateway turn, on every backend.

A :class:`CountingStore` wraps the backend; the gateway runs in-process with the local
fake upstream. One non-streamed turn may make at most 8 store calls on its request path,
one streamed turn of 200 chunks at most 12; the background work a turn leaves behind
(state keeper, compaction) is counted apart and bounded per turn. The flush interval is
set long so that the number of flushes does not depend on the machine's speed: the
writer flushes the first chunk at once and the rest with the terminal record.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from chatstate.server import ServerConfig
from chatstate.server.deps import Services
from chatstate.testing.counting import CountingStore
from chatstate.testing.plugin import MakeStore
from helpers.fake_openai import FakeOpenAI
from test_server_support import api

WORDS = "the parcel left the depot on monday and should reach the customer".split()
REPLY_200 = " ".join(WORDS[i % len(WORDS)] + str(i) for i in range(198))  # + role, finish
REQUEST_BUDGET = 8
STREAM_BUDGET = 12
BACKGROUND_BUDGET = 8


async def _settle(svc: Services) -> None:
    """Wait for the answer and the after-turn work (hang guard only)."""
    async with asyncio.timeout(60):
        while pending := [*svc.gateway._tasks.values(), *svc.gateway._background]:
            await asyncio.wait(pending)
        await svc.engine.drain()


async def _turn(c: httpx.AsyncClient, text: str, *, stream: bool) -> str:
    body = {
        "model": "gpt-4o",
        "session_id": "s1",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.text


async def _measure(counting: CountingStore) -> tuple[Counter[str], Counter[str], list[int]]:
    """Request-path calls of one non-streamed and one streamed turn after 24 turns of
    history (enough for summaries and retrieval hits), and the background calls of each."""
    with FakeOpenAI(" ".join(WORDS * 4)) as fake:
        config = ServerConfig(
            dev_mode=True,
            upstream_base_url=fake.base_url,
            context_budget=1500,
            stream_flush_seconds=60,
        )
        async with api(config, counting.store) as a:
            svc: Services = a.app.state.services
            for i in range(24):
                await _turn(a.client, f"question {i} about order #{1000 + i}", stream=i % 2 == 0)
                await _settle(svc)
            fake.set_reply(REPLY_200)
            counting.reset()
            text = await _turn(a.client, "and what about order #1003?", stream=False)
            assert "parcel" in text
            plain = counting.request_path()
            await _settle(svc)
            background = [sum(counting.background().values())]
            counting.reset()
            text = await _turn(a.client, "and order #1005?", stream=True)
            assert text.count("data: ") >= 200
            streamed = counting.request_path()
            await _settle(svc)
            background.append(sum(counting.background().values()))
            built = svc.engine.stats.builds
            assert built >= 26
    print(f"\nnon-streamed turn: {sum(plain.values())} calls {dict(plain)}")
    print(f"streamed turn (200 chunks): {sum(streamed.values())} calls {dict(streamed)}")
    print(f"background calls per turn: {background}")
    return plain, streamed, background


async def test_turns_stay_within_their_store_call_budget(make_store: MakeStore) -> None:
    """Retrieved messages come from the session's index, which keeps the messages it
    indexed: retrieval adds no store call to a turn."""
    counting = CountingStore(await make_store())
    plain, streamed, background = await _measure(counting)
    assert sum(plain.values()) <= REQUEST_BUDGET, plain
    assert sum(streamed.values()) <= STREAM_BUDGET, streamed
    assert plain["read_all"] == streamed["read_all"] == 0
    assert plain["put_state"] == streamed["put_state"] == 0  # no lease rewrites
    assert all(b <= BACKGROUND_BUDGET for b in background), background
