"""The context engine over a real store: compaction off the request path, retrieval,
summaries that cover every dropped event once, and a log that is never rewritten."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from chatstate.context.engine import ContextEngine
from chatstate.errors import BackendUnavailable
from chatstate.model import Event, NewEvent
from chatstate.store.sqlite import SQLiteStore

T = "acme"
FILLER = "tell me more about the shipping options and delivery windows for my area " * 3


class JoiningSummariser:
    """Deterministic stand-in: keeps every line it is given (facts are never lost)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, tuple[int, ...]]] = []

    async def summarise(
        self, *, previous: str | None, events: Sequence[Event], max_tokens: int
    ) -> str:
        self.calls.append((previous, tuple(e.seq for e in events)))
        lines = [previous] if previous else []
        lines += [f"{e.role}#{e.seq}: {str(e.content)[:40]}" for e in events if e.content]
        return "\n".join(lines)[-4 * max_tokens :]


class BrokenSummariser:
    async def summarise(
        self, *, previous: str | None, events: Sequence[Event], max_tokens: int
    ) -> str:
        raise BackendUnavailable("summariser is down")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "ctx.db")
    yield s
    await s.close()


async def chat(engine: ContextEngine, session: str, turns: int, *, first: str = "") -> None:
    for i in range(turns):
        text = first if (i == 0 and first) else f"question {i}: {FILLER}"
        await engine.append(
            session,
            [
                NewEvent.message("user", text),
                NewEvent.message("assistant", f"answer {i}: {FILLER}"),
            ],
            tenant_id=T,
        )


async def test_append_counts_tokens_once(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    result = await engine.append("s", [NewEvent.message("user", "hello there")], tenant_id=T)
    assert result.events[0].token_count == 2
    stored = await store.read(tenant_id=T, session_id="s")
    assert stored[0].token_count == 2


async def test_small_sessions_go_in_whole(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await engine.append("s", [NewEvent.message("system", "You are a support agent.")], tenant_id=T)
    await chat(engine, "s", 3)
    built = await engine.build("s", "and the price?", tenant_id=T, budget=4000)
    assert built.messages[0] == {"role": "system", "content": "You are a support agent."}
    assert built.messages[-1] == {"role": "user", "content": "and the price?"}
    assert built.manifest.verbatim == tuple(range(2, 8))
    assert not built.manifest.silent_truncation and not built.compaction_scheduled


async def test_compaction_runs_in_background_and_covers_everything_once(
    store: SQLiteStore,
) -> None:
    summariser = JoiningSummariser()
    engine = ContextEngine(store, summariser=summariser)
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 40)
    first = await engine.build("s", "what now?", tenant_id=T, budget=1500)
    assert first.manifest.used <= 1500
    assert first.manifest.dropped and first.manifest.silent_truncation
    assert first.compaction_scheduled
    await engine.drain()
    assert engine.stats.compactions == 1
    for round_no in range(4):  # more turns, more compactions, each folding the last
        await chat(engine, "s", 8)
        built = await engine.build("s", f"and now {round_no}?", tenant_id=T, budget=1500)
        await engine.drain()
    built = await engine.build("s", "finally?", tenant_id=T, budget=1500)
    summary = built.manifest.summary
    assert summary is not None and summary.from_seq == 1
    assert built.manifest.dropped == () and not built.manifest.silent_truncation
    # Every chat event is covered exactly once: by the summary or sent verbatim.
    log = await store.read(tenant_id=T, session_id="s", limit=10_000)
    chat_seqs = [e.seq for e in log if e.kind == "message"]
    verbatim = set(built.manifest.verbatim)
    for seq in chat_seqs:
        assert (seq <= summary.to_seq) != (seq in verbatim), seq
    # Successive summaries folded their predecessor over contiguous spans.
    spans = [seqs for _, seqs in summariser.calls]
    for earlier, later in itertools.pairwise(spans):
        assert later[0] > earlier[-1]
    assert all(prev is not None for prev, _ in summariser.calls[1:])
    # Compaction never deletes: the whole history is still there.
    assert sum(1 for e in log if e.kind == "message") == 2 * (40 + 32)
    assert sum(1 for e in log if e.kind == "summary") == engine.stats.compactions


async def test_failed_compaction_keeps_the_previous_context(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=BrokenSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 30)
    built = await engine.build("s", "hi", tenant_id=T, budget=1200)
    assert built.compaction_scheduled
    await engine.drain()
    assert engine.stats.compaction_failures == 1
    again = await engine.build("s", "hi", tenant_id=T, budget=1200)
    assert again.manifest.verbatim == built.manifest.verbatim
    assert again.manifest.silent_truncation
    log = await store.read(tenant_id=T, session_id="s", limit=1000)
    assert all(e.kind == "message" for e in log)


async def test_retrieval_brings_back_an_early_fact(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 40, first="my order number is 48213 and it arrived broken")
    built = await engine.build(
        "s", "what was my order number 48213 about?", tenant_id=T, budget=1500
    )
    retrieved = {seq for r in built.manifest.retrieved for seq in r.seqs}
    assert 1 in retrieved
    assert any("48213" in str(m["content"]) for m in built.messages[:-1])


async def test_prefix_stays_stable_between_compactions(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await engine.append("s", [NewEvent.message("system", "Be kind.")], tenant_id=T)
    await store.put_state(
        tenant_id=T,
        session_id="s",
        expected_version=0,
        data={"facts": {"account": {"value": "A-1"}}},
    )
    await chat(engine, "s", 2)
    first = await engine.build("s", "one", tenant_id=T, budget=4000)
    await chat(engine, "s", 1)
    second = await engine.build("s", "two", tenant_id=T, budget=4000)
    assert first.manifest.prefix_tokens > 0
    assert second.manifest.stable_prefix_tokens == second.manifest.prefix_tokens
    assert "account: A-1" in str(second.messages[1]["content"])


async def test_system_prompt_is_found_beyond_the_window(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser(), tail_limit=20)
    await store.create_session(tenant_id=T, session_id="s")
    await engine.append("s", [NewEvent.message("system", "Always answer in French.")], tenant_id=T)
    await chat(engine, "s", 30)
    built = await engine.build("s", "bonjour", tenant_id=T, budget=100_000)
    assert built.messages[0]["content"] == "Always answer in French."
    assert built.manifest.uncovered_before is not None  # honest: older turns not examined
    assert built.manifest.silent_truncation


async def test_current_message_from_the_log(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 2)
    await engine.append("s", [NewEvent.message("user", "already stored")], tenant_id=T)
    built = await engine.build("s", tenant_id=T, budget=4000)
    assert built.messages[-1] == {"role": "user", "content": "already stored"}
    assert 5 not in built.manifest.verbatim


async def test_tool_results_are_paired_when_written(store: SQLiteStore) -> None:
    from chatstate.errors import ValidationError
    from chatstate.model import ToolCall

    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    call = ToolCall(id="call_9", name="lookup", arguments="{}")
    await engine.append(
        "s",
        [
            NewEvent.message("user", "look it up"),
            NewEvent(kind="tool_call", role="assistant", tool_calls=(call,)),
        ],
        tenant_id=T,
    )
    result = NewEvent(kind="tool_result", role="tool", content="found", tool_call_id="call_9")
    with pytest.raises(ValidationError):
        await engine.append(
            "s",
            [NewEvent(kind="tool_result", role="tool", content="?", tool_call_id="nope")],
            tenant_id=T,
        )
    recent = await store.read_last(tenant_id=T, session_id="s", n=8)
    with pytest.raises(ValidationError, match="call_9"):  # given the window, all the rules
        await engine.append("s", [NewEvent.message("user", "hm?")], tenant_id=T, recent=recent)
    await engine.append("s", [result], tenant_id=T, recent=recent)
    with pytest.raises(ValidationError, match="already has a result"):  # answered twice
        await engine.append("s", [result], tenant_id=T)
    assert len(await store.read(tenant_id=T, session_id="s")) == 3


async def test_forget_drops_what_the_engine_holds(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 40, first="my secret code is 998877")
    await engine.build("s", "what was my secret code 998877?", tenant_id=T, budget=1500)
    assert engine._indexes and engine._prefixes
    await store.delete_session(tenant_id=T, session_id="s")
    await engine.forget(T, "s")
    assert not engine._indexes and not engine._prefixes
    assert not engine._tasks


async def test_a_summary_beyond_the_window_is_still_used(store: SQLiteStore) -> None:
    engine = ContextEngine(store, summariser=JoiningSummariser())
    await store.create_session(tenant_id=T, session_id="s")
    await chat(engine, "s", 30)
    first = await engine.build("s", "q", tenant_id=T, budget=1500)
    await engine.drain()
    assert first.compaction_scheduled and engine.stats.compactions == 1
    engine.auto_compact = False  # compaction falls behind
    await chat(engine, "s", 100)
    built = await engine.build("s", "q", tenant_id=T, budget=1500)
    assert built.manifest.summary is not None  # found again through the engine's memory
    assert built.manifest.uncovered_before is not None  # and the lag is reported
    fresh = ContextEngine(store, summariser=JoiningSummariser(), auto_compact=False)
    cold = await fresh.build("s", "q", tenant_id=T, budget=1500)
    assert cold.manifest.summary is None and cold.manifest.silent_truncation


async def test_two_engines_compacting_the_same_span_is_not_a_failure(store: SQLiteStore) -> None:
    class Numbered(JoiningSummariser):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        async def summarise(
            self, *, previous: str | None, events: Sequence[Event], max_tokens: int
        ) -> str:
            return self.tag + await super().summarise(
                previous=previous, events=events, max_tokens=max_tokens
            )

    one = ContextEngine(store, summariser=Numbered("one"))
    two = ContextEngine(store, summariser=Numbered("two"))
    await store.create_session(tenant_id=T, session_id="s")
    await chat(one, "s", 30)
    await one.build("s", "q", tenant_id=T, budget=1500)
    await two.build("s", "q", tenant_id=T, budget=1500)
    await one.drain()
    await two.drain()
    assert one.stats.compaction_failures == two.stats.compaction_failures == 0
    log = await store.read(tenant_id=T, session_id="s", limit=1000)
    assert sum(1 for e in log if e.kind == "summary") == 1
