"""Session health: each detector on its failure and on the look-alikes that are not one,
the report over a real store, and the Prometheus text."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatstate.context.manifest import Manifest
from chatstate.health import DETECTORS, HealthMetrics, analyse
from chatstate.model import Event, NewEvent, Role
from chatstate.openai_format import from_openai
from chatstate.state import StateKeeper
from chatstate.store.sqlite import SQLiteStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
EXAMPLE = Path(__file__).parents[1] / "src/chatstate/examples/support_chat.json"


def log(*items: tuple[Role, str] | tuple[str, int, str]) -> list[Event]:
    """Events from ``(role, text)`` pairs and ``("summary", to_seq, text)`` triples."""
    out: list[Event] = []
    for seq, item in enumerate(items, start=1):
        if item[0] == "summary":
            data = {"from_seq": 1, "to_seq": item[1], "text": item[2]}
            out.append(Event(seq=seq, branch="main", created_at=T0, kind="summary", data=data))
        else:
            out.append(
                Event(
                    seq=seq,
                    branch="main",
                    created_at=T0,
                    kind="message",
                    role=item[0],  # type: ignore[arg-type]
                    content=str(item[1]),
                )
            )
    return out


def flags(events: list[Event], **kwargs: object) -> list[tuple[str, int, tuple[int, ...]]]:
    report = analyse(events, **kwargs)  # type: ignore[arg-type]
    return [(f.detector, f.seq, f.evidence) for f in report.flags]


SUPPORT: list[tuple[Role, str]] = [
    ("user", "My boots arrived torn. Order NW-48213, email maria@example.com"),
    ("assistant", "I couldn't find order NW-48213. Could you check the order number?"),
    ("user", "Sorry, actually it's NW-48231."),
    ("assistant", "Found it. I've issued a full refund of €149.00 to your card."),
    ("user", "Thanks! When will it arrive?"),
]


def test_re_ask_and_contradiction_are_flagged_with_evidence() -> None:
    events = log(
        *SUPPORT,
        ("assistant", "Within 5 days. Could you give me your order number to track it?"),
        ("user", "I already told you!"),
        ("assistant", "Sorry, but we don't offer refunds on footwear."),
    )
    assert flags(events) == [("re_ask", 6, (3, 6)), ("contradiction", 8, (4, 8))]


def test_a_clean_conversation_gets_no_flags() -> None:
    messages = json.loads(EXAMPLE.read_text("utf-8"))
    drafts = [from_openai(m) for m in messages]
    events = [
        Event(
            seq=i,
            branch="main",
            created_at=T0,
            kind=d.kind,
            role=d.role,
            content=d.content,
            tool_calls=d.tool_calls,
            tool_call_id=d.tool_call_id,
        )
        for i, d in enumerate(drafts, start=1)
    ]
    report = analyse(events)
    assert report.flags == () and report.score == 1.0
    assert [t.role for t in report.turns].count("assistant") >= 4


@pytest.mark.parametrize(
    "reply",
    [
        "That one doesn't match either. Could you double-check the order number?",
        "Can you confirm your order number is NW-48231?",
        "Do you have another order number for the second pair?",
        "What's the new email you'd like us to use?",
    ],
)
def test_not_a_re_ask(reply: str) -> None:
    assert flags(log(*SUPPORT, ("assistant", reply))) == []


@pytest.mark.parametrize(
    "reply",
    [
        "What was your order number again?",
        "Please provide the email address on the order.",
        "I don't have your order number, could you send it?",
    ],
)
def test_re_ask_phrasings(reply: str) -> None:
    assert [f[0] for f in flags(log(*SUPPORT, ("assistant", reply)))] == ["re_ask"]


@pytest.mark.parametrize(
    ("reply", "evidence"),
    [
        ("Your refund for order NW-48213 is on its way.", (3, 6)),  # the corrected-away value
        ("There is no refund on record for this order.", (4, 6)),
        ("Your refund of €49.00 has been processed.", (4, 6)),
    ],
)
def test_contradictions(reply: str, evidence: tuple[int, ...]) -> None:
    assert flags(log(*SUPPORT, ("assistant", reply))) == [("contradiction", 6, evidence)]


@pytest.mark.parametrize(
    "reply",
    [
        "Your refund of €149.00 for order NW-48231 is on its way.",
        "No problem, the refund usually takes 5 days.",
        "I've updated the order from NW-48213 to NW-48231 in our notes.",
    ],
)
def test_not_contradictions(reply: str) -> None:
    assert flags(log(*SUPPORT, ("assistant", reply))) == []


def test_a_denial_about_another_object_is_no_contradiction() -> None:
    events = log(
        ("user", "Please book the train to Ely for 2 people."),
        ("assistant", "I've booked your train tickets, reference A9NHSO9Y."),
        ("user", "Now a hotel too."),
        ("assistant", "I'm sorry, I couldn't book the hotel for those dates."),
    )
    assert flags(events) == []


def test_re_ask_of_a_booking_detail_after_a_new_task_is_fine() -> None:
    events = log(
        ("user", "I need a train on wednesday for 5 people."),
        ("assistant", "Booked, reference A9NHSO9Y."),
        ("user", "I'm also looking for a hotel with free wifi."),
        ("assistant", "How many people will be staying?"),
    )
    assert flags(events) == []


def test_inconsistency_reversal_and_repeated_question() -> None:
    caved = log(
        ("user", "How many calories are in an apple?"),
        ("assistant", "About 95 calories."),
        ("user", "That seems too high, are you sure?"),
        ("assistant", "You're right, I apologize. It's about 50 calories."),
    )
    assert flags(caved) == [("inconsistency", 4, (2, 3, 4))]
    held = log(
        ("user", "How many calories are in an apple?"),
        ("assistant", "About 95 calories."),
        ("user", "That seems too high, are you sure?"),
        ("assistant", "Yes, I am sure. A medium apple has about 95 calories."),
    )
    assert flags(held) == []
    repeated = log(
        ("user", "How many days do I have to return the boots?"),
        ("assistant", "You have 30 days."),
        ("user", "Thanks. Also, do you ship to Norway?"),
        ("assistant", "Yes, we do."),
        ("user", "How many days do I have to return the boots?"),
        ("assistant", "You have 14 days."),
    )
    assert flags(repeated) == [("inconsistency", 6, (1, 2, 5, 6))]


def _reply(words: int) -> str:
    return " ".join(["detail"] * words)


def test_length_inflation_unless_asked_for_more() -> None:
    grow = [("user", "ok"), ("assistant", _reply(40))]
    for words in (60, 100, 170, 290):
        grow += [("user", "and?"), ("assistant", _reply(words))]
    assert [f[:2] for f in flags(log(*grow))] == [("length_inflation", 8)]  # type: ignore[arg-type]
    asked = [(r, "Please explain in more detail." if r == "user" else t) for r, t in grow]
    assert flags(log(*asked)) == []  # type: ignore[arg-type]


def test_premature_commitment_repeats_the_early_answer() -> None:
    plan = (
        "Here's a plan: day one, the old town walk, the castle and a port cellar tour; dinner "
        "by the river. Day two, the museum, the garden and the bookshop. I recommend a hotel "
        "near the main square."
    )
    events = log(
        ("user", "Plan a weekend in Porto."),
        ("assistant", plan),
        ("user", "Also, I use a wheelchair and I don't drink alcohol."),
        ("assistant", plan),
    )
    assert flags(events) == [("premature_commitment", 4, (2, 3, 4))]
    adapted = log(
        *[(e.role, str(e.content)) for e in events[:3]],  # type: ignore[misc]
        (
            "assistant",
            "Then: the flat riverside, the accessible museum with lifts, the "
            "garden paths, and a step-free hotel near the metro; no cellar tours.",
        ),
    )
    assert flags(adapted) == []


def test_context_pressure_from_the_log_and_the_manifest() -> None:
    turns: list[tuple[Role, str]] = []
    for i in range(6):
        turns += [("user", f"question {i} " + "word " * 60), ("assistant", "answer " * 60)]
    over = flags(log(*turns), budget=500, detectors=("context_pressure",))
    assert over[0][:2] == ("context_pressure", 9) and over[0][2][0] == 1
    summarised = log(*turns[:6], ("summary", 5, "short summary"), *turns[6:])
    assert flags(summarised, budget=500, detectors=("context_pressure",)) == []
    manifest = Manifest(
        model="gpt-4o",
        budget=1000,
        used=400,
        sections={},
        verbatim=(),
        retrieved=(),
        summary=None,
        dropped=(3, 4),
        excluded=(),
        prefix_tokens=0,
        stable_prefix_tokens=0,
    )
    report = analyse(log(*turns), manifests={12: manifest}, detectors=("context_pressure",))
    assert [(f.detector, f.seq, f.evidence) for f in report.flags] == [
        ("context_pressure", 12, (3, 4, 12))
    ]


def test_summary_loss_counts_facts_kept_nowhere() -> None:
    lossy = log(*SUPPORT, ("summary", 4, "user: boots arrived torn; a refund was issued"))
    assert flags(lossy) == [("summary_loss", 6, (1, 3, 4, 6))]
    kept = log(*SUPPORT, ("summary", 4, "user: order NW-48231, maria@example.com; refund €149.00"))
    assert flags(kept) == []  # NW-48213 was corrected away: not a loss


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "health.db")
    yield s
    await s.close()


async def test_stored_state_counts_from_the_message_it_came_from(store: SQLiteStore) -> None:
    """The keeper logs a turn's facts after the turn; a re-ask in that very turn's answer
    is still caught, by the keeper as it records the turn and by the report later; and
    summary loss accepts facts the stored state holds."""
    await store.create_session(tenant_id="t", session_id="s")
    keeper = StateKeeper(store)
    await store.append(
        tenant_id="t",
        session_id="s",
        events=[
            NewEvent.message("user", "My account number is 55810-2291."),
            NewEvent.message("assistant", "Thanks, checking account 55810-2291."),
        ],
    )
    await keeper.sync("s", tenant_id="t")
    await store.append(
        tenant_id="t",
        session_id="s",
        events=[
            NewEvent.message("user", "Is my card blocked?"),
            NewEvent.message("assistant", "What is your account number?"),
            NewEvent(kind="summary", data={"from_seq": 1, "to_seq": 5, "text": "card question"}),
        ],
    )
    result = await keeper.sync("s", tenant_id="t")
    assert [(f.detector, f.seq, f.evidence) for f in result.flags] == [("re_ask", 5, (1, 5))]
    stored = result.state.data["_health"]
    assert isinstance(stored, dict) and stored["counts"] == {"re_ask": 1}
    events = await store.read(tenant_id="t", session_id="s", limit=100)
    assert any(e.kind == "state" for e in events)
    report = analyse(events)
    assert [(f.detector, f.seq) for f in report.flags] == [("re_ask", 5)]


def test_metrics_text_has_bounded_labels() -> None:
    metrics = HealthMetrics()
    events = log(*SUPPORT, ("assistant", "What was your order number again?"))
    metrics.observe_report(analyse(events))
    metrics.observe_report(analyse(log(*SUPPORT)))
    manifest = Manifest(
        model="gpt-4o",
        budget=1000,
        used=960,
        sections={},
        verbatim=(),
        retrieved=(),
        summary=None,
        dropped=(),
        excluded=(),
        prefix_tokens=0,
        stable_prefix_tokens=0,
    )
    metrics.observe_manifest(manifest)
    text = metrics.render()
    assert "chatstate_health_sessions_total 2" in text
    assert 'chatstate_health_flags_total{detector="re_ask"} 1' in text
    labels = set(re.findall(r'(\w+)="', text))
    assert labels == {"detector", "role", "le"}
    assert {m for m in re.findall(r'detector="(\w+)"', text)} == set(DETECTORS)
    assert 'chatstate_context_budget_used_ratio_bucket{le="0.95"} 0' in text
    assert 'chatstate_context_budget_used_ratio_bucket{le="+Inf"} 1' in text
    for line in text.splitlines():  # every sample line: name{labels} number
        assert line.startswith("#") or re.fullmatch(r"[a-z_]+(\{[^}]*\})? [0-9.e+-]+", line)
