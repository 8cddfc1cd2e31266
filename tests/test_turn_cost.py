"""Bounded background work: compaction folds enough text per summary that the
summaries stay a small fraction of the log, however long the conversation."""

from __future__ import annotations

from chatstate.bench.peers import conversation
from chatstate.context.engine import ContextEngine
from chatstate.model import NewEvent
from chatstate.store.memory import MemoryStore


async def test_summaries_stay_under_half_the_raw_text() -> None:
    store = MemoryStore()
    engine = ContextEngine(store)
    session = (await store.create_session(tenant_id="t")).id
    raw = 0
    for user, reply in conversation(300, words=80):
        await engine.build(session, user, tenant_id="t", budget=2000)
        pair = [NewEvent.message("user", user), NewEvent.message("assistant", reply)]
        await engine.append(session, pair, tenant_id="t")
        await engine.drain()  # the memory store never yields: let compaction run, as I/O would
        raw += len(user) + len(reply)
    await engine.drain()
    events = await store.read(tenant_id="t", session_id=session, limit=10_000)
    summaries = [str(e.data["text"]) for e in events if e.kind == "summary"]
    assert len(summaries) >= 5  # compaction ran all along
    assert sum(map(len, summaries)) <= raw / 2
    await store.close()
