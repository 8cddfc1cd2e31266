"""The engine's retrieval indexes stay within a documented memory ceiling: at most
``max_sessions`` branches and ``max_index_bytes`` of estimated footprint, least recently
used dropped first, never the one in use; a dropped index is rebuilt by its next build
and retrieves exactly what it did before."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatstate.context.bm25 import BM25Retriever
from chatstate.context.engine import ContextEngine
from chatstate.context.excerpts import line
from chatstate.context.session_index import IndexCache, SessionIndex, footprint
from chatstate.model import Event, NewEvent
from chatstate.store.sqlite import SQLiteStore
from chatstate.testing.counting import CountingStore

T = "acme"
NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _index(texts: list[str]) -> SessionIndex:
    index = SessionIndex(BM25Retriever())
    events = [
        Event(seq=i + 1, branch="main", kind="message", role="user", content=t, created_at=NOW)
        for i, t in enumerate(texts)
    ]
    index.retriever.add(index.documents(events))
    return index


def test_the_cache_keeps_within_its_count_and_bytes_never_dropping_the_one_in_use() -> None:
    one = _index(["alpha " * 50])
    assert one.size == footprint("alpha " * 50) and one.upto == 1
    cache = IndexCache(max_sessions=2, max_bytes=3 * one.size)
    keys = [(T, f"s{i}", "main") for i in range(4)]
    cache.put(keys[0], one)
    cache.put(keys[1], _index(["beta " * 50]))
    cache.put(keys[2], _index(["gamma " * 50]))  # over the count: s0 goes
    assert list(cache) == keys[1:3] and cache.evicted == 1
    assert cache.get(keys[0]) is None
    huge = _index(["delta " * 2000])  # alone over the bytes: kept while in use
    cache.put(keys[3], huge)
    assert list(cache) == [keys[3]] and cache.size == huge.size > cache.max_bytes
    cache.put(keys[1], _index(["beta " * 50]))  # now the huge one is the oldest: it goes
    assert list(cache) == [keys[1]]
    cache.drop(T, "s1")
    assert not cache
    with pytest.raises(ValueError, match="positive"):
        IndexCache(max_sessions=0)


def test_line_tokens_counts_each_indexed_message_once_and_nothing_else() -> None:
    index = _index(["alpha beta gamma.", "delta epsilon."])
    texts: list[str] = []

    def count(text: str) -> int:
        texts.append(text)
        return len(text)

    tokens = index.line_tokens(count, "chars")
    first = index.events[1]
    shown = line(first) + "\n"  # as the section lays it out
    assert tokens(first) == len(shown) == tokens(first)
    assert texts == [shown]  # counted once, then kept
    cut = dataclasses.replace(first, content="alpha")  # same seq, another text
    assert tokens(cut) is None
    assert index.line_tokens(count, "chars")(first) == len(shown) and len(texts) == 1
    assert index.line_tokens(lambda t: 1, "ones")(first) == 1  # another tokenizer: afresh
    assert index.line_counts == {1: 1}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "idx.db")
    yield s
    await s.close()


async def _chat(engine: ContextEngine, session: str, secret: str) -> None:
    filler = "shipping options and delivery windows for the area, please explain "
    for i in range(60):
        user = f"my code is {secret}" if i == 3 else f"question {i} about {filler * 3}"
        await engine.append(
            session,
            [NewEvent.message("user", user), NewEvent.message("assistant", f"ok {i} {filler}")],
            tenant_id=T,
        )


async def test_an_engine_over_its_ceiling_drops_and_rebuilds_an_index(
    store: SQLiteStore,
) -> None:
    roomy = ContextEngine(store)
    tight = ContextEngine(store, max_index_bytes=1)  # one index at a time
    sessions = {"a": "111222", "b": "333444", "c": "555666"}
    for sid, secret in sessions.items():
        await store.create_session(tenant_id=T, session_id=sid)
        await _chat(roomy, sid, secret)

    async def found(engine: ContextEngine, sid: str) -> list[int]:
        built = await engine.build(
            sid, f"what was my code {sessions[sid]}?", tenant_id=T, budget=600
        )
        return [s for turn in built.manifest.retrieved for s in turn.seqs]

    for _ in range(2):  # the second round rebuilds every index the tight engine dropped
        for sid in sessions:
            got = await found(tight, sid)
            assert got == await found(roomy, sid)
            assert 7 in got  # the message with the code, retrieved from the rebuilt index
            assert len(tight._indexes) == 1
    assert tight._indexes.evicted == 5
    assert roomy._indexes.evicted == 0 and len(roomy._indexes) == 3


def test_the_running_total_follows_growth_and_drops() -> None:
    cache = IndexCache(max_sessions=10, max_bytes=10**9)
    index = _index(["alpha " * 10])
    cache.put((T, "s1", "main"), index)
    first = index.size
    events = [
        Event(
            seq=2, branch="main", kind="message", role="user", content="beta " * 40, created_at=NOW
        )
    ]
    index.retriever.add(index.documents(events))  # the index grew after it was put
    cache.put((T, "s1", "main"), index)
    cache.put((T, "s1", "fork"), _index(["gamma"]))
    assert cache.size == index.size + footprint("gamma") > first
    cache.drop(T, "s1")
    assert cache.size == 0 and not cache


async def test_a_worker_with_hundreds_of_sessions_keeps_them_warm(store: SQLiteStore) -> None:
    """At the old default of 256 branches, the 260 sessions below were each rebuilt from
    their whole history on every build: one window read per build became a full scan."""
    counting = CountingStore(store)
    engine = ContextEngine(
        counting.store, auto_compact=False, retriever_factory=BM25Retriever.for_messages
    )
    sessions = [f"w{i}" for i in range(260)]
    for sid in sessions:
        await store.create_session(tenant_id=T, session_id=sid)
        events = [
            NewEvent.message("user" if i % 2 == 0 else "assistant", f"m{i} {sid} " * 12)
            for i in range(12)
        ]
        await store.append(tenant_id=T, session_id=sid, events=events)
    for sid in sessions:  # cold: each indexes its history
        await engine.build(sid, f"what about m3 {sid}", tenant_id=T, budget=300)
    counting.reset()
    for sid in sessions:  # warm: the window only
        await engine.build(sid, f"what about m5 {sid}", tenant_id=T, budget=300)
    assert engine._indexes.evicted == 0 and len(engine._indexes) == 260
    assert counting.request_path() == {"read": 260, "get_state": 260}


async def test_a_cold_build_reads_no_more_history_than_a_warm_one(store: SQLiteStore) -> None:
    """A worker that restarts under a 10,000-event session: its first build reads what a
    warm build reads and goes without a retrieved section, saying why; a background task
    indexes the history, and the builds after it retrieve from all of it."""
    await store.create_session(tenant_id=T, session_id="long")
    filler = "shipping options and delivery windows for the area"
    for start in range(0, 10_000, 100):
        batch = [
            NewEvent.message(
                "user" if i % 2 == 0 else "assistant",
                "my parcel code is ZX-48213" if i == 6 else f"{filler} {i}",
            )
            for i in range(start, start + 100)
        ]
        await store.append(tenant_id=T, session_id="long", events=batch)
    counting = CountingStore(store)
    engine = ContextEngine(
        counting.store, auto_compact=False, retriever_factory=BM25Retriever.for_messages
    )
    question = "what was my parcel code ZX-48213 again?"

    cold = await engine.build("long", question, tenant_id=T, budget=1500)
    cold_read = counting.events_on_request_path()
    assert "indexed in the background" in cold.manifest.reasons["retrieved"]
    assert not cold.manifest.retrieved
    await engine.drain()  # the background task indexes all 10,000
    assert sum(n for n, task in counting.events_read if task.startswith("index-")) == 10_000

    counting.reset()
    warm = await engine.build("long", question, tenant_id=T, budget=1500)
    assert cold_read <= counting.events_on_request_path() < 1000
    assert 7 in [seq for turn in warm.manifest.retrieved for seq in turn.seqs]

    # Erasing the session cancels indexing in flight: nothing of it comes back.
    other = ContextEngine(store, retriever_factory=BM25Retriever.for_messages)
    await other.build("long", question, tenant_id=T, budget=1500)
    await other.forget(T, "long")
    await other.drain()
    assert ("acme", "long", "main") not in other._indexes
