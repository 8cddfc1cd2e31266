"""Recall machinery: presets, the message's intent, the value-following split, neighbours
and dates of retrieved messages, sub-queries and their fusion."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatstate.context.assemble import (
    PRESETS,
    ContextPolicy,
    ContextRequest,
    SummaryInput,
    assemble,
    intent_of,
    parse_policy,
)
from chatstate.context.bm25 import BM25Retriever
from chatstate.context.engine import ContextEngine
from chatstate.context.queries import date_mark, fuse, sub_queries
from chatstate.context.retrieval import Retriever
from chatstate.context.tokens import counter_for
from chatstate.context.turns import Turn
from chatstate.errors import ValidationError
from chatstate.model import Event, NewEvent
from chatstate.store.sqlite import SQLiteStore

COUNT = counter_for("gpt-4o").count
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FILLER = "we chatted about the weather and the traffic and what to cook tonight"
NO_NEAR = ContextPolicy(neighbours=False)
"""Retrieved hits only: what a test finds was ranked, not brought in beside a hit."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "recall.db")
    yield s
    await s.close()


def msg(seq: int, role: str, text: str) -> Event:
    return Event(seq=seq, branch="main", created_at=NOW, kind="message", role=role, content=text)  # type: ignore[arg-type]


def test_presets_parse_and_fields_override_them() -> None:
    assert parse_policy("recall") == PRESETS["recall"]
    assert parse_policy("") == ContextPolicy()
    cost = parse_policy("cost, retrieve_k=5, neighbours=true")
    assert (cost.fill, cost.retrieve_k, cost.neighbours) == (0.5, 5, True)
    assert parse_policy("multi_query=on").multi_query is True
    for bad in ("nope", "recall,nope=1", "retrieve_k=x", "neighbours=maybe", "fill=0"):
        with pytest.raises(ValidationError):
            parse_policy(bad)


def test_intent_follows_the_message() -> None:
    assert intent_of("When did Ann start her pottery class?", retrieved=True)[0] == "past"
    assert intent_of("why?", retrieved=True)[0] == "follow-up"
    assert intent_of("and what about the blue one then", retrieved=True)[0] == "follow-up"
    assert intent_of("When did Ann start pottery?", retrieved=False)[0] == "recent"


def tail(n: int) -> list[Event]:
    out = []
    for i in range(n):
        out.append(msg(len(out) + 1, "user", f"question {i} {FILLER}"))
        out.append(msg(len(out) + 1, "assistant", f"answer {i} {FILLER}"))
    return out


def request(events: list[Event], question: str, hits: list[int]) -> ContextRequest:
    by_seq = {e.seq: e for e in events}
    return ContextRequest(
        model="gpt-4o",
        budget=600,
        tail=events,
        candidates=[(Turn((by_seq[s],), 30), 1.0 / (i + 1)) for i, s in enumerate(hits)],
        current=NewEvent.message("user", question),
        neighbours={s: (by_seq[s - 1], by_seq[s + 1]) for s in hits},
        dates={s: "8 May, 2023" if s < 20 else "9 June, 2023" for s in by_seq},
    )


def test_a_question_about_the_past_gives_retrieval_the_budget() -> None:
    events = tail(60)
    past = assemble(
        request(events, "What colour was Ann's first bowl?", [3, 41]), ContextPolicy(), COUNT
    )
    follow = assemble(request(events, "and then?", [3, 41]), ContextPolicy(), COUNT)
    fixed = assemble(
        request(events, "What colour was Ann's first bowl?", [3, 41]),
        ContextPolicy(adaptive=False),
        COUNT,
    )
    assert past.manifest.reasons["intent"].startswith("past")
    assert follow.manifest.reasons["intent"].startswith("follow-up")
    assert "adaptive" not in str(fixed.manifest.reasons) and "intent" not in fixed.manifest.reasons
    # the recent window gets the floor only: neighbours of both hits fit, with dates
    assert past.manifest.sections["recent"] < follow.manifest.sections["recent"]
    seqs = {s for r in past.manifest.retrieved for s in r.seqs}
    assert {2, 3, 4, 40, 41, 42} <= seqs
    assert (2, 3, 4) in [r.seqs for r in past.manifest.retrieved]  # one run, merged
    text = str(past.messages[0]["content"])
    assert "(8 May, 2023)\n[#2]" in text and "(9 June, 2023)\n[#40]" in text
    assert past.manifest.used <= 600
    no_near = assemble(
        request(events, "What colour was Ann's first bowl?", [3, 41]),
        ContextPolicy(neighbours=False),
        COUNT,
    )
    assert {s for r in no_near.manifest.retrieved for s in r.seqs} == {3, 41}


def test_the_summary_gives_way_when_retrieval_has_more_than_fits() -> None:
    events = tail(60)
    summary = SummaryInput(seq=200, from_seq=1, to_seq=80, text="user: Ann made a bowl.")
    few = replace(request(events, "What colour was Ann's first bowl?", [3]), summary=summary)
    many = replace(
        request(events, "What colour was Ann's first bowl?", list(range(3, 80, 2))),
        summary=summary,
    )
    follow = replace(request(events, "and then?", list(range(3, 80, 2))), summary=summary)
    kept = assemble(few, ContextPolicy(), COUNT).manifest
    assert kept.summary is not None and kept.sections["summary"] > 0
    assert kept.reasons["summary"].startswith("up to")
    # 39 candidates of 30 tokens cannot all fit in 600: the summary's room goes to them.
    left = assemble(many, ContextPolicy(), COUNT).manifest
    assert left.summary is None and left.sections["summary"] == 0
    assert left.reasons["summary"].startswith("left out: 39 retrieved candidates (1170 tokens)")
    assert assemble(follow, ContextPolicy(), COUNT).manifest.summary is not None


def test_cost_preset_sends_at_most_its_fill() -> None:
    events = tail(60)
    out = assemble(
        request(events, "What colour was Ann's first bowl?", [3, 41]), PRESETS["cost"], COUNT
    )
    assert out.manifest.used <= 300 + 20  # half the budget, plus the current message
    assert "fill" in out.manifest.reasons


def test_a_long_hit_is_cut_to_its_sentences_that_match() -> None:
    events = tail(60)
    long = " ".join(f"Sentence {i} is about nothing in particular." for i in range(80))
    events[2] = replace(events[2], content=f"{long} The bowl was blue. {long}")
    out = assemble(request(events, "What colour was the bowl?", [3]), ContextPolicy(), COUNT)
    text = str(out.messages[0]["content"])
    assert "[#3] user: The bowl was blue." in text


def test_sub_queries_and_fusion() -> None:
    parts = sub_queries("When did Ann go to Paris, and what did she buy in May 2023?")
    assert "Ann" in parts and "Paris" in parts and "May 2023" in parts
    assert any("buy" in p for p in parts)
    assert sub_queries("what is my locker code") == []
    fused = fuse([(1.0, [(1, 9.0), (2, 5.0)]), (0.5, [(3, 2.0), (2, 1.0)])], 3)
    assert [doc for doc, _ in fused] == [2, 1, 3]


def test_date_marks() -> None:
    assert date_mark("[1:56 pm on 8 May, 2023] Ann: hi") == "8 May, 2023"
    assert date_mark("[2024-03-01] Ann: hi") == "2024-03-01"
    assert date_mark("[note] hi") is None
    assert date_mark("no mark 2023") is None


async def test_engine_finds_a_reply_by_its_question_and_dates_it(store: SQLiteStore) -> None:
    engine = ContextEngine(store, retriever_factory=BM25Retriever.for_messages, policy=NO_NEAR)
    session = (await store.create_session(tenant_id="t")).id
    first = [
        NewEvent.message("user", "[8 May, 2023] Ann: Which glaze did you pick for the vase?"),
        NewEvent.message("assistant", "Bo: The cobalt one, it came out great."),
    ]
    await engine.append(session, first, tenant_id="t")
    for i in range(80):
        await engine.append(
            session,
            [
                NewEvent.message(
                    "user", f"[9 June, 2023] Ann: {FILLER} {i}" if i == 0 else f"Ann: {FILLER} {i}"
                ),
                NewEvent.message("assistant", f"Bo: {FILLER}"),
            ],
            tenant_id="t",
        )
    built = await engine.build(session, "Which glaze went on the vase?", tenant_id="t", budget=500)
    seqs = {s for r in built.manifest.retrieved for s in r.seqs}
    assert 2 in seqs  # the reply holds no word of the question: found through its question
    text = "\n".join(str(m["content"]) for m in built.messages)
    assert "(8 May, 2023)\n[#1] user" in text
    await engine.aclose()


async def test_engine_expands_the_question_from_its_first_hits(store: SQLiteStore) -> None:
    """The message about the vase never says "pottery": the engine's BM25 finds it through
    "studio", which the messages that do say it share with it; without the expansion it
    is not sent."""

    async def fill(engine: ContextEngine, session: str, turns: int) -> None:
        for i in range(turns):
            pair = [
                NewEvent.message("user", f"Ann: {FILLER} {i}"),
                NewEvent.message("assistant", f"Bo: {FILLER}"),
            ]
            await engine.append(session, pair, tenant_id="t")

    async def sent(factory: Callable[[], Retriever]) -> set[int]:
        engine = ContextEngine(store, retriever_factory=factory, policy=NO_NEAR)
        session = (await store.create_session(tenant_id="t")).id
        opening = [
            NewEvent.message("user", "Ann: I started pottery classes at the studio downtown."),
            NewEvent.message("assistant", "Bo: Pottery at a studio, how fun."),
        ]
        await engine.append(session, opening, tenant_id="t")
        await fill(engine, session, 10)
        vase = "Ann: The glaze on my vase came out blue after the kiln firing at the studio."
        await engine.append(session, [NewEvent.message("user", vase)], tenant_id="t")
        await fill(engine, session, 80)
        built = await engine.build(session, "How is the pottery going?", tenant_id="t", budget=500)
        await engine.aclose()
        return {s for r in built.manifest.retrieved for s in r.seqs}

    vase_seq = 23  # 2 opening messages, 10 filler turns of 2, then the vase
    assert vase_seq in await sent(BM25Retriever.for_messages)
    assert vase_seq not in await sent(lambda: BM25Retriever(previous=1.0))


async def test_build_takes_a_policy_by_name(store: SQLiteStore) -> None:
    engine = ContextEngine(store, retriever_factory=BM25Retriever)
    session = (await store.create_session(tenant_id="t")).id
    for i in range(60):
        await engine.append(
            session,
            [
                NewEvent.message("user", f"Ann: {FILLER} {i}"),
                NewEvent.message("assistant", f"Bo: {FILLER}"),
            ],
            tenant_id="t",
        )
    question = "What did we say about the traffic and dinner?"
    full = await engine.build(session, question, tenant_id="t", budget=2000)
    cheap = await engine.build(session, question, tenant_id="t", budget=2000, policy="cost")
    assert cheap.manifest.used <= 1000 < full.manifest.used
    assert "fill" in cheap.manifest.reasons
    with pytest.raises(ValidationError):
        await engine.build(session, question, tenant_id="t", policy="nope")
    await engine.aclose()
