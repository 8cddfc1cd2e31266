"""Budgeted assembly: the budget is a hard limit, turns stay whole, output is stable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstate.context.assemble import ContextPolicy, ContextRequest, SummaryInput, assemble
from chatstate.context.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD, EstimateCounter, counter_for
from chatstate.context.turns import group_turns
from chatstate.errors import TooLarge
from chatstate.model import Event, NewEvent, ToolCall

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COUNT = counter_for("gpt-4o").count
POLICY = ContextPolicy()


def ev(seq: int, draft: NewEvent) -> Event:
    return Event(
        seq=seq,
        branch="main",
        created_at=NOW,
        kind=draft.kind,
        role=draft.role,
        content=draft.content,
        tool_calls=draft.tool_calls,
        tool_call_id=draft.tool_call_id,
        name=draft.name,
        data=draft.data,
    )


def conversation(turns: int, words: int = 30) -> list[Event]:
    out: list[Event] = []
    for t in range(turns):
        seq = len(out) + 1
        out.append(ev(seq, NewEvent.message("user", f"question {t} " + "word " * words)))
        if t % 4 == 3:
            call = ToolCall(id=f"call_{t}", name="lookup", arguments=f'{{"q": {t}}}')
            out.append(
                ev(seq + 1, NewEvent(kind="tool_call", role="assistant", tool_calls=(call,)))
            )
            out.append(
                ev(
                    seq + 2,
                    NewEvent(
                        kind="tool_result", role="tool", content=f"result {t}", tool_call_id=call.id
                    ),
                )
            )
        out.append(ev(len(out) + 1, NewEvent.message("assistant", f"answer {t} " + "ok " * words)))
    return out


def tokens_of(messages: list[dict[str, object]]) -> int:
    total = REPLY_OVERHEAD
    for m in messages:
        content = m.get("content")
        text = content if isinstance(content, str) else ""
        calls = m.get("tool_calls") or []
        for c in calls:  # type: ignore[attr-defined]
            text += (
                "\n" if text else ""
            ) + f"{c['function']['name']}({c['function']['arguments']})"
        total += COUNT(text) + 4
    return total


def test_everything_fits_when_the_budget_allows() -> None:
    events = conversation(5)
    out = assemble(
        ContextRequest(
            model="gpt-4o",
            budget=100_000,
            tail=events,
            system="Be brief.",
            current=NewEvent.message("user", "and now?"),
        ),
        POLICY,
        COUNT,
    )
    assert out.manifest.verbatim == tuple(e.seq for e in events)
    assert out.manifest.dropped == ()
    assert not out.manifest.silent_truncation
    assert out.messages[0] == {"role": "system", "content": "Be brief."}
    assert out.messages[-1] == {"role": "user", "content": "and now?"}
    assert out.manifest.used == tokens_of(out.messages)


def test_newest_turns_are_kept_and_truncation_is_reported() -> None:
    events = conversation(40)
    out = assemble(ContextRequest(model="gpt-4o", budget=600, tail=events), POLICY, COUNT)
    assert out.manifest.used <= 600
    assert out.manifest.verbatim[-1] == events[-1].seq
    kept = out.manifest.verbatim
    assert list(kept) == list(range(kept[0], events[-1].seq + 1))  # a contiguous newest run
    assert out.manifest.dropped and out.manifest.silent_truncation
    assert set(out.manifest.dropped) | set(kept) == {e.seq for e in events}
    assert out.overflow and out.overflow[-1].last_seq < kept[0]


def test_summary_covers_what_it_covers() -> None:
    events = conversation(40)
    tail = [e for e in events if e.seq > 60]
    summary = SummaryInput(seq=999, from_seq=1, to_seq=60, text="user asked 15 questions")
    out = assemble(
        ContextRequest(model="gpt-4o", budget=5000, tail=tail, summary=summary), POLICY, COUNT
    )
    assert out.manifest.summary is not None and out.manifest.summary.to_seq == 60
    assert out.manifest.dropped == ()
    assert "up to message 60" in str(out.messages[0]["content"])


def test_mandatory_parts_over_budget_raise() -> None:
    with pytest.raises(TooLarge):
        assemble(
            ContextRequest(model="gpt-4o", budget=10, tail=[], system="x " * 50), POLICY, COUNT
        )


def test_orphans_and_oversized_events_are_excluded_and_said() -> None:
    call = ToolCall(id="c1", name="f", arguments="{}")
    events = [
        ev(1, NewEvent.message("user", "hi")),
        ev(2, NewEvent(kind="tool_call", role="assistant", tool_calls=(call,))),  # no result
        ev(3, NewEvent.message("user", "again")),
        ev(4, NewEvent(kind="tool_result", role="tool", content="?", tool_call_id="zz")),
        ev(5, NewEvent.message("user", "huge " * 5000)),
        ev(6, NewEvent(kind="marker", data={"x": 1})),
        ev(7, NewEvent.message("assistant", "fine")),
    ]
    out = assemble(ContextRequest(model="gpt-4o", budget=3000, tail=events), POLICY, COUNT)
    reasons = dict(out.manifest.excluded)
    assert set(reasons) == {2, 4, 5}
    assert reasons[5] == "oversized"
    assert out.manifest.verbatim == (1, 3, 7)
    roles = [m["role"] for m in out.messages]
    assert "tool" not in roles


def test_prefix_is_stable_until_state_or_summary_changes() -> None:
    events = conversation(30)
    summary = SummaryInput(seq=500, from_seq=1, to_seq=20, text="facts: order 48213")
    base = ContextRequest(
        model="gpt-4o",
        budget=2000,
        tail=events[20:],
        system="sys",
        pinned="account: 48213",
        summary=summary,
    )
    first = assemble(base, POLICY, COUNT)
    again = assemble(
        ContextRequest(
            **{
                **_fields(base),
                "tail": events[20:] + conversation(1),
                "previous_prefix": first.manifest.prefix_hashes,
            }
        ),
        POLICY,
        COUNT,
    )
    assert again.manifest.stable_prefix_tokens == first.manifest.prefix_tokens > 0
    changed = assemble(
        ContextRequest(
            **{
                **_fields(base),
                "pinned": "account: 99999",
                "previous_prefix": first.manifest.prefix_hashes,
            }
        ),
        POLICY,
        COUNT,
    )
    assert changed.manifest.stable_prefix_tokens == first.manifest.sections["system"]


def _fields(request: ContextRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in request.__slots__}  # type: ignore[attr-defined]


def test_retrieved_turns_come_back_in_their_section() -> None:
    events = conversation(40)
    turns, _ = group_turns(events, count=COUNT, max_event_tokens=10_000)
    wanted = turns[2]
    out = assemble(
        ContextRequest(
            model="gpt-4o",
            budget=1500,
            tail=events,
            candidates=[(wanted, 3.5)],
            current=NewEvent.message("user", "question 2?"),
        ),
        POLICY,
        COUNT,
    )
    assert out.manifest.retrieved[0].seqs == wanted.seqs
    assert f"[#{wanted.first_seq}]" in str(out.messages[0]["content"])
    assert wanted.first_seq not in out.manifest.dropped
    assert out.manifest.used <= 1500


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[Event], int, list[int], str | None]:
    n = draw(st.integers(0, 40))
    words = draw(st.integers(1, 80))
    budget = draw(st.integers(50, 4000))
    picks = draw(st.lists(st.integers(0, 40), max_size=6, unique=True))
    system = draw(st.none() | st.text(min_size=1, max_size=200))
    return conversation(n, words), budget, picks, system


@settings(max_examples=150, deadline=None)
@given(sessions(), st.sampled_from(["gpt-4o", "claude-3", "gpt-4"]))
def test_budget_is_never_exceeded(
    case: tuple[list[Event], int, list[int], str | None], model: str
) -> None:
    events, budget, picks, system = case
    count = counter_for(model).count
    turns, _ = group_turns(events, count=count, max_event_tokens=10**9)
    candidates = [(turns[i], float(-i)) for i in picks if i < len(turns)]
    request = ContextRequest(
        model=model,
        budget=budget,
        tail=events,
        system=system,
        pinned="k: v\n" * 20,
        candidates=candidates,
        current=NewEvent.message("user", "now"),
    )
    try:
        out = assemble(request, POLICY, count)
    except TooLarge:
        return
    assert out.manifest.used <= budget
    assert sum(out.manifest.sections.values()) + REPLY_OVERHEAD == out.manifest.used
    if model == "gpt-4o":
        assert tokens_of(out.messages) <= budget
    # Tool calls are never separated from their results.
    sent = out.manifest.verbatim
    for e in events:
        if e.kind == "tool_call" and e.seq in sent:
            assert e.seq + 1 in sent
        if e.kind == "tool_result" and e.seq in sent:
            assert e.seq - 1 in sent
    # Identical input, identical output.
    assert assemble(request, POLICY, count) == out


def test_estimator_never_undercounts_english() -> None:
    text = " ".join(f"word{i} and some more text, numbers 48213" for i in range(200))
    assert EstimateCounter().count(text) >= COUNT(text)


def test_partial_answers_are_marked_as_such() -> None:
    cut = NewEvent(
        kind="message",
        role="assistant",
        content="The refund will be",
        data={"chatstate": {"status": "incomplete", "response_id": "r1"}},
    )
    events = [
        ev(1, NewEvent.message("user", "refund?")),
        ev(2, cut),
        ev(3, NewEvent.message("user", "go on")),
    ]
    out = assemble(ContextRequest(model="gpt-4o", budget=2000, tail=events), POLICY, COUNT)
    sent = [m for m in out.messages if m["role"] == "assistant"]
    assert sent[0]["content"] == (
        "The refund will be\n\n[This reply was cut off before it finished (incomplete).]"
    )
    assert out.manifest.used == tokens_of(out.messages)


_LINE_ENDS = st.sampled_from(["", " ", "  \n", "\n", ".", "?!", "...", "\r", "\t", ":)", "/", "'s"])


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.tuples(st.text(max_size=80), _LINE_ENDS), min_size=1, max_size=12),
    labels=st.lists(st.sampled_from(["2023-05-08", "8 May, 2023", None]), min_size=12),
)
def test_the_retrieved_section_costs_exactly_the_sum_of_its_lines(
    texts: list[tuple[str, str]], labels: list[str | None]
) -> None:
    """The assembly never encodes the whole retrieved section: it adds its lines' counts.
    That holds because each line after the header starts with ``[`` or ``(``, which no
    pre-token of OpenAI's encodings joins to the newline before it."""
    from chatstate.context.excerpts import excerpt_cost, excerpts

    picked = [
        (ev(i + 1, NewEvent.message("user" if i % 2 else "assistant", text + end)), 1.0)
        for i, (text, end) in enumerate(texts)
    ]
    dates = {i + 1: label for i, label in enumerate(labels[: len(texts)]) if label is not None}
    for model in ("gpt-4o", "gpt-4"):
        count = counter_for(model).count
        section = excerpts(picked, dates)
        assert excerpt_cost(picked, dates, count) == count(section) + MESSAGE_OVERHEAD
    rough = EstimateCounter().count  # the byte estimate: never under
    assert excerpt_cost(picked, dates, rough) >= rough(excerpts(picked, dates)) + MESSAGE_OVERHEAD
