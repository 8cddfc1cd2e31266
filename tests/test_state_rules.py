"""The offline extractor: facts, corrections, commitments, goal and questions, by rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatstate.model import Event, Role
from chatstate.state import Change, RuleExtractor, commitments_of, facts_of
from chatstate.state.fold import apply_all
from chatstate.state.mentions import fact_mentions
from chatstate.state.promises import constraints, denials, promises, reversals

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def conversation(*turns: tuple[Role, str]) -> list[Event]:
    return [
        Event(seq=i, branch="main", created_at=T0, kind="message", role=role, content=text)
        for i, (role, text) in enumerate(turns, start=1)
    ]


def fold(*turns: tuple[Role, str]) -> tuple[list[Change], dict[str, object]]:
    changes = RuleExtractor().changes(conversation(*turns), {})
    return changes, apply_all({}, changes)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("My account number is 48213.", "account_number", "48213"),
        ("order #NW-48213 never arrived", "order_number", "NW-48213"),
        ("ticket 55123 is still open", "ticket_number", "55123"),
        ("reach me at maria.lopez@example.com", "email", "maria.lopez@example.com"),
        ("my mobile is +44 7700 900123", "phone", "+44 7700 900123"),
        ("Please call me on (415) 555-0134 after five", "phone", "(415) 555-0134"),
        ("My zip code is 94110 and I live downtown", "postcode", "94110"),
        ("my name is Maria Lopez, hi", "name", "Maria Lopez"),
        ("You can call me Mo.", "preferred_name", "Mo"),
        ("I was charged $59.99 twice", "charged_amount", "$59.99"),
        ("Book a table for 6 people", "party_size", "6"),
        ("we need 3 nights starting on tuesday", "nights", "3"),
        ("we need 3 nights starting on tuesday", "day", "tuesday"),
        ("my employee id is EMP-4471", "employee_id", "EMP-4471"),
    ],
)
def test_user_facts(text: str, key: str, value: str) -> None:
    found = {m.key: m.value for m in fact_mentions(text, role="user")}
    assert found.get(key) == value, found


@pytest.mark.parametrize(
    "text",
    [
        "I want to order 2 pizzas",
        "my problem is that it keeps crashing",
        "my son is sick today",
        "in order to fix it I restarted",
        "the case 12 items were fine",
    ],
)
def test_not_facts(text: str) -> None:
    keys = {m.key for m in fact_mentions(text, role="user")}
    assert not keys & {"order_number", "problem", "son", "case_number"}, keys


def test_assistant_gives_only_issued_identifiers() -> None:
    text = "I couldn't find order NW-48213. Your ticket number is 88213; call 0800 123 456."
    assert {m.key for m in fact_mentions(text, role="assistant")} == {"ticket_number"}


def test_correction_names_the_key_or_resembles_a_value() -> None:
    changes, doc = fold(
        ("user", "My order is NW-48213, email maria@example.com"),
        ("assistant", "I couldn't find order NW-48213."),
        ("user", "Oh sorry, actually it's NW-48231, I swapped the last two digits."),
    )
    facts = facts_of(doc)  # type: ignore[arg-type]
    assert facts["order_number"].value == "NW-48231"
    assert facts["order_number"].history[0].value == "NW-48213"
    assert facts["order_number"].history[0].reason == "correction"
    assert [c.op for c in changes if c.seq == 3] == ["correct_fact"]


def test_correction_with_not_previous() -> None:
    _, doc = fold(
        ("user", "my account number is 48123"),
        ("user", "Actually it's 48213, not 48123."),
    )
    fact = facts_of(doc)["account_number"]  # type: ignore[arg-type]
    assert fact.value == "48213" and fact.history[0].value == "48123"


def test_update_without_cue_keeps_history_as_update() -> None:
    _, doc = fold(("user", "6 people 3 nights please"), ("user", "how about only 2 nights."))
    fact = facts_of(doc)["nights"]  # type: ignore[arg-type]
    assert fact.value == "2" and fact.history[0].reason == "update"


@pytest.mark.parametrize(
    ("text", "topic", "status"),
    [
        ("I've issued a full refund of €149.", "refund", "fulfilled"),
        ("I will escalate this to our billing team today.", "escalation", "active"),
        ("Your order has been cancelled.", "cancellation", "fulfilled"),
        ("Booking was successful. Reference number is : 7GAWK763.", "booking", "fulfilled"),
        ("I'll call you back tomorrow morning.", "callback", "active"),
        ("I've applied a 20% discount to your next bill.", "credit", "fulfilled"),
        ("A replacement has been shipped to you.", "replacement", "fulfilled"),
    ],
)
def test_promises(text: str, topic: str, status: str) -> None:
    found = promises(text)
    assert [(p.topic, p.status) for p in found] == [(topic, status)]


@pytest.mark.parametrize(
    "text",
    [
        "Would you like me to issue a refund?",
        "I can issue a refund if you like.",
        "Unfortunately I can't process a refund for this order.",
        "If you'd like, I will escalate it.",
        "Refunds usually take 5 days.",
    ],
)
def test_not_promises(text: str) -> None:
    assert promises(text) == []


def test_reversal_revokes_and_done_fulfils() -> None:
    _, doc = fold(
        ("user", "The screen is cracked."),
        ("assistant", "I will escalate this to a specialist team."),
        ("assistant", "I've escalated your case to the specialist team."),
        ("assistant", "I've issued a refund of $40."),
        ("user", "Please cancel the refund, I found a fix."),
        ("assistant", "Done, I've cancelled the refund."),
    )
    by_topic = {c.topic: c for c in commitments_of(doc)}  # type: ignore[arg-type]
    assert by_topic["escalation"].status == "fulfilled"
    assert "escalated" in by_topic["escalation"].text  # the fulfilling sentence
    assert by_topic["refund"].status == "revoked"
    assert [t for t, _ in reversals("I've cancelled the refund.")] == ["refund"]


def test_constraints_goal_and_questions() -> None:
    changes, doc = fold(
        ("user", "I'd like to plan a trip to Lisbon. Please don't call me. When is it warm?"),
        ("assistant", "Lisbon is warm from May to October."),
        ("user", "Also I need to book a hotel under $150 a night. Is breakfast included?"),
        ("assistant", "Let me check the breakfast options for you."),
    )
    assert doc["goal"] == "I need to book a hotel under $150 a night"
    texts = [c.text for c in commitments_of(doc) if c.topic == "constraint"]  # type: ignore[arg-type]
    assert texts == ["Please don't call me.", "Also I need to book a hotel under $150 a night."]
    open_q = doc["open_questions"]
    assert isinstance(open_q, list) and [q["id"] for q in open_q] == ["q3"]  # type: ignore[index]
    assert constraints("It must be vegetarian.") == ["It must be vegetarian."]
    assert constraints("It must have a lift. The room should have two beds.") == [
        "It must have a lift.",
        "The room should have two beds.",
    ]
    # An inference about the past sets nothing.
    assert constraints("Wow, it must have been special at your wedding.") == []
    assert constraints("That must have been tough. The trip should have started.") == []
    assert any(c.op == "resolve_question" and c.key == "q1" for c in changes)


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Unfortunately we do not offer refunds on sale items.", "refund"),
        ("There is no refund on record for your account.", "refund"),
        ("I'm sorry, I don't see any booking under your name.", "booking"),
        ("Your refund request was denied.", "refund"),
        ("Escalation isn't possible for this kind of issue.", "escalation"),
    ],
)
def test_denials(text: str, topic: str) -> None:
    assert [t for t, _ in denials(text)] == [topic]


@pytest.mark.parametrize(
    "text",
    [
        "No problem, your refund is on its way.",
        "You do not need to send the boots back for the refund.",
        "Your refund is confirmed.",
    ],
)
def test_not_denials(text: str) -> None:
    assert denials(text) == []
