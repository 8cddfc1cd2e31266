"""ExtractiveSummariser, tested the way users test summaries: facts early, filler, folds,
then probes; and the summary's size across rounds."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import pytest

from chatstate.context.extractive import (
    ExtractiveSummariser,
    estimate_tokens,
    fact_tokens,
    is_fact,
)
from chatstate.context.summaries import Summariser
from chatstate.model import Event, Role, ToolCall

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# (who says it, the sentence, what a probe looks for in the final summary)
EARLY_FACTS: list[tuple[Role, str, str]] = [
    ("user", "My name is Priya Raman.", "Priya Raman"),
    ("user", "Call me Pri, everyone does.", "Call me Pri"),
    ("user", "My order number is 48213.", "48213"),
    ("user", "My email is priya.raman@example.com if you need it.", "priya.raman@example.com"),
    ("user", "I'm allergic to peanuts, so no snack boxes please.", "allergic to peanuts"),
    ("user", "I live in Lisbon near the river.", "Lisbon"),
    ("user", "The delivery address is 12 Rua Augusta, 1100-048 Lisboa.", "12 Rua Augusta"),
    ("user", "My account id is AC-99812.", "AC-99812"),
    ("assistant", "I've issued a refund of $42.50 to your card ending 4417.", "$42.50"),
    ("assistant", "I'll send the replacement by Friday.", "replacement by Friday"),
    ("user", "Actually, my phone number is +351 912 345 678.", "912 345 678"),
    ("user", "My flight leaves on March 3rd.", "March 3rd"),
    ("user", "My dog's name is Biscuit.", "Biscuit"),
    ("user", "I prefer email over phone calls.", "prefer email"),
    ("assistant", "Your ticket TCK-5521 is approved.", "TCK-5521"),
    ("assistant", "We decided to upgrade you to express shipping at no cost.", "express shipping"),
    ("user", "Remember that the gate code is 7734.", "7734"),
    ("assistant", "The warranty covers the screen until 2027-06-30.", "2027-06-30"),
    ("user", "Our budget is 1,200 euros at most.", "1,200 euros"),
    ("user", "See https://example.com/specs/v2 for the part.", "https://example.com/specs/v2"),
]

_FILLER_WORDS = (
    "really quite general idea about how things usually go with most of the usual stuff "
    "that people tend to ask when they are curious or unsure about something or other "
    "and whether it makes sense in practice or only in theory for someone like me"
).split()


def _filler(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 3)):
        words = rng.choices(_FILLER_WORDS, k=rng.randint(6, 16))
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def _events(pairs: list[tuple[Role, str]], start: int = 1) -> list[Event]:
    return [
        Event(seq=start + i, branch="main", created_at=T0, kind="message", role=role, content=text)
        for i, (role, text) in enumerate(pairs)
    ]


def _conversation(seed: int, filler_turns: int) -> list[Event]:
    rng = random.Random(seed)
    pairs: list[tuple[Role, str]] = []
    for role, sentence, _ in EARLY_FACTS:
        pairs.append((role, f"{_filler(rng)} {sentence} {_filler(rng)}"))
    for turn in range(filler_turns):
        pairs.append(("user" if turn % 2 == 0 else "assistant", _filler(rng)))
    return _events(pairs)


async def _fold_in_rounds(
    summariser: Summariser, events: list[Event], span: int, max_tokens: int
) -> list[str]:
    summaries: list[str] = []
    previous: str | None = None
    for start in range(0, len(events), span):
        previous = await summariser.summarise(
            previous=previous, events=events[start : start + span], max_tokens=max_tokens
        )
        summaries.append(previous)
    return summaries


def test_is_a_summariser() -> None:
    assert isinstance(ExtractiveSummariser(), Summariser)


def test_filler_carries_no_fact() -> None:
    rng = random.Random(0)
    assert not any(is_fact(_filler(rng)) for _ in range(500))
    assert all(is_fact(sentence) for _, sentence, _ in EARLY_FACTS)


async def test_every_early_fact_survives_many_folds() -> None:
    events = _conversation(seed=1, filler_turns=400)
    summaries = await _fold_in_rounds(ExtractiveSummariser(), events, span=20, max_tokens=500)
    assert len(summaries) == 21
    final = summaries[-1]
    missing = [probe for _, _, probe in EARLY_FACTS if probe not in final]
    assert missing == [], f"{len(missing)}/{len(EARLY_FACTS)} early facts lost: {missing}"
    # each fact once, with its speaker
    assert final.count("48213") == 1
    assert "assistant: I've issued a refund of $42.50" in final
    assert "user: My name is Priya Raman." in final


async def test_summary_size_stays_within_budget_over_rounds() -> None:
    events = _conversation(seed=2, filler_turns=400)
    summaries = await _fold_in_rounds(ExtractiveSummariser(), events, span=20, max_tokens=500)
    sizes = [estimate_tokens(s) for s in summaries]
    assert max(sizes) <= 500
    # past the facts, filler replaces filler: no growth from round 5 to the last
    assert sizes[-1] <= sizes[4] * 1.2


async def test_repeated_facts_do_not_grow_the_summary() -> None:
    summariser = ExtractiveSummariser()
    rounds = [
        _events([("user", "My order number is 48213."), ("assistant", "I'll ship it Monday.")])
        for _ in range(5)
    ]
    summary: str | None = None
    sizes = []
    for events in rounds:
        summary = await summariser.summarise(previous=summary, events=events, max_tokens=200)
        sizes.append(len(summary))
    assert summary == "user: My order number is 48213.\nassistant: I'll ship it Monday."
    assert sizes == [sizes[0]] * 5


async def test_facts_over_budget_are_all_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    events = _events([("user", f"My ticket number {i} is open.") for i in range(40)])
    with caplog.at_level(logging.WARNING, logger="chatstate.context.extractive"):
        summary = await ExtractiveSummariser().summarise(
            previous=None, events=events, max_tokens=50
        )
    assert all(f"number {i} is open" in summary for i in range(40))
    assert "keeping every fact" in caplog.text


async def test_filler_dropped_before_topics_and_assistant_before_user() -> None:
    events = _events(
        [
            ("user", "I was wondering about the general way this works."),  # filler (opening)
            ("user", "What about the cost of shipping?"),  # topic: user question
            ("assistant", "Shipping through Lisbon takes longer."),  # topic: named
            ("user", "My code is 9911."),  # fact
        ]
    )
    summariser = ExtractiveSummariser(count_tokens=lambda text: len(text.split()))
    full = summariser.fold(previous=None, events=events, max_tokens=1000)
    assert len(full.splitlines()) == 4
    budget = sum(len(line.split()) + 1 for line in full.splitlines())
    cut_one = summariser.fold(previous=None, events=events, max_tokens=budget - 1)
    assert "general way" not in cut_one
    cut_two = summariser.fold(previous=None, events=events, max_tokens=budget - 12)
    assert cut_two.splitlines() == [
        "user: What about the cost of shipping?",
        "user: My code is 9911.",
    ]
    only_fact = summariser.fold(previous=None, events=events, max_tokens=1)
    assert only_fact == "user: My code is 9911."


async def test_previous_summary_from_another_summariser_keeps_its_facts() -> None:
    previous = (
        "The customer, Priya, asked about order 48213.\n"
        "They chatted about the general way things work.\n"
        "- assistant: promised a callback on Tuesday"
    )
    events = _events([("user", "Thanks, that sounds fine to me overall.")])
    summary = await ExtractiveSummariser().summarise(
        previous=previous, events=events, max_tokens=25
    )
    assert "order 48213" in summary
    assert "callback on Tuesday" in summary
    assert "general way" not in summary


async def test_only_user_and_assistant_messages_are_read() -> None:
    events = [
        Event(seq=1, branch="main", created_at=T0, kind="message", role="system",
              content="System prompt with secret 1234."),
        Event(seq=2, branch="main", created_at=T0, kind="tool_call", role="assistant",
              tool_calls=(ToolCall(id="c1", name="lookup", arguments='{"id": 5555}'),)),
        Event(seq=3, branch="main", created_at=T0, kind="tool_result", role="tool",
              tool_call_id="c1", content='{"status": "shipped", "eta": "2026-02-01"}'),
        Event(seq=4, branch="main", created_at=T0, kind="message", role="assistant",
              content="Here you go:\n```python\nprint(31337)\n```\nIt shipped on 2026-01-30."),
    ]  # fmt: skip
    summary = await ExtractiveSummariser().summarise(previous=None, events=events, max_tokens=200)
    assert summary == "assistant: It shipped on 2026-01-30."


async def test_sentences_split_sensibly_and_long_ones_are_clipped_around_the_fact() -> None:
    long_sentence = ("blah " * 150) + "and my locker code is 4242 " + ("blah " * 150) + "end."
    events = _events(
        [
            ("user", "Dr. Smith said the dose is 5 mg. Thanks! Is 3.5 ok? At most 2 a day."),
            ("user", long_sentence),
        ]
    )
    summary = await ExtractiveSummariser(max_sentence_chars=120).summarise(
        previous=None, events=events, max_tokens=500
    )
    lines = summary.splitlines()
    assert lines[0] == "user: Dr. Smith said the dose is 5 mg."
    assert lines[1] == "user: Is 3.5 ok?"
    assert lines[2] == "user: At most 2 a day."
    assert "4242" in lines[3]
    assert lines[3].startswith("user: ...")
    assert len(lines[3]) < 140


async def test_deterministic_and_empty_inputs() -> None:
    events = _conversation(seed=3, filler_turns=60)
    first = await _fold_in_rounds(ExtractiveSummariser(), events, span=15, max_tokens=300)
    second = await _fold_in_rounds(ExtractiveSummariser(), events, span=15, max_tokens=300)
    assert first == second
    summariser = ExtractiveSummariser()
    assert await summariser.summarise(previous=None, events=[], max_tokens=10) == ""
    assert await summariser.summarise(previous="user: a\n\n", events=[], max_tokens=10) == (
        "user: a"
    )
    with pytest.raises(ValueError, match="max_tokens"):
        await summariser.summarise(previous=None, events=[], max_tokens=0)


def test_fact_lines_and_fact_tokens() -> None:
    events = _events([("user", "My order is 48213. Whatever works in general for me.")])
    assert ExtractiveSummariser().fact_lines(previous="user: I live in Porto.", events=events) == [
        "user: I live in Porto.",
        "user: My order is 48213.",
    ]
    assert fact_tokens("order #48213, mail a.b@x.com, $42.50, https://x.io/a?b=1. ORD-77") == [
        "48213",
        "a.b@x.com",
        "42.50",
        "https://x.io/a?b=1",
        "ORD-77",
    ]


def _long_fact_rounds(rounds: int) -> list[list[Event]]:
    rng = random.Random(11)
    out = []
    for r in range(rounds):
        pairs: list[tuple[Role, str]] = []
        for i in range(5):
            before = " ".join(rng.choices(_FILLER_WORDS, k=12))
            after = " ".join(rng.choices(_FILLER_WORDS, k=12))
            pairs.append(
                ("user", f"So {before} and my code {r}-{i} is {1000 + 10 * r + i} {after}.")
            )
        out.append(_events(pairs, start=r * 5 + 1))
    return out


async def test_a_steady_stream_of_facts_is_compressed_not_lost() -> None:
    summariser = ExtractiveSummariser()
    summary: str | None = None
    for events in _long_fact_rounds(10):
        summary = await summariser.summarise(previous=summary, events=events, max_tokens=300)
    assert summary is not None
    assert all(f"{1000 + 10 * r + i}" in summary for r in range(10) for i in range(5))
    lines = summary.splitlines()
    assert len(lines) == 50
    # long lines were cut to the words around the fact, not kept whole
    assert all(line.startswith("user: ... ") for line in lines[:40])
    assert max(len(line.split()) for line in lines[:40]) <= 16  # from about 30


async def test_drop_oldest_bounds_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    summariser = ExtractiveSummariser(overflow="drop_oldest")
    summary: str | None = None
    with caplog.at_level(logging.INFO, logger="chatstate.context.extractive"):
        for events in _long_fact_rounds(10):
            summary = await summariser.summarise(previous=summary, events=events, max_tokens=300)
            assert estimate_tokens(summary) <= 300
    assert summary is not None
    assert "1094" in summary  # the newest fact
    assert "1000" not in summary  # the oldest went first
    assert "dropped the" in caplog.text
