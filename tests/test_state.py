"""Session state over a real store: the fold, the keeper, the explicit API, and pinning.

The headline: an account number the user gives at turn 2 is still in the context the
engine builds at turn 200 under a 1,000-token budget, because the state document pins it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatstate.context.engine import ContextEngine
from chatstate.context.pinned import render_state
from chatstate.errors import ValidationError
from chatstate.model import Event, JSONValue, NewEvent
from chatstate.openai_format import from_openai
from chatstate.state import Change, StateKeeper, apply, commitments_of, facts_of, rebuild_state
from chatstate.state.fold import MAX_FACTS, MAX_HISTORY, apply_all
from chatstate.store.sqlite import SQLiteStore

T = "acme"
EXAMPLE = Path(__file__).parents[1] / "src/chatstate/examples/support_chat.json"


def public(doc: object) -> dict[str, JSONValue]:
    assert isinstance(doc, dict)
    return {k: v for k, v in doc.items() if not k.startswith("_")}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "state.db")
    yield s
    await s.close()


async def support_session(store: SQLiteStore, sid: str = "s1") -> None:
    await store.create_session(tenant_id=T, session_id=sid)
    messages = json.loads(EXAMPLE.read_text("utf-8"))
    await store.append(tenant_id=T, session_id=sid, events=[from_openai(m) for m in messages])


# -- the fold ------------------------------------------------------------------------------


def test_apply_is_pure_and_idempotent() -> None:
    change = Change("set_fact", key="order_number", value="NW-1", seq=2, source="rules")
    empty: dict[str, JSONValue] = {}
    once = apply(empty, change)
    assert empty == {} and apply(once, change) == once
    commit = Change("add_commitment", key="c5", value="I've issued a refund.", topic="refund")
    twice = apply_all(once, [commit, commit])
    assert len(commitments_of(twice)) == 1


def test_history_is_bounded_and_delete_forgets() -> None:
    changes = [
        Change("correct_fact", key="k", value=f"v{i}", seq=i) for i in range(MAX_HISTORY + 5)
    ]
    doc = apply_all({}, changes)
    fact = facts_of(doc)["k"]
    assert fact.value == f"v{MAX_HISTORY + 4}" and len(fact.history) == MAX_HISTORY
    assert "k" not in facts_of(apply(doc, Change("delete_fact", key="k")))


def test_facts_are_bounded_pinned_ones_kept() -> None:
    pinned = Change("set_fact", key="account", value="1", seq=0, pinned=True)
    many = [Change("set_fact", key=f"k{i}", value="v", seq=i + 1) for i in range(MAX_FACTS + 50)]
    facts = facts_of(apply_all({}, [pinned, *many]))
    assert len(facts) == MAX_FACTS and "account" in facts and "k0" not in facts


def test_change_round_trips_and_refuses_nonsense() -> None:
    change = Change(
        "correct_fact", key="email", value="a@b.c", seq=4, at="t", source="llm", previous="x"
    )
    assert Change.from_data(change.to_data()) == change
    with pytest.raises(ValidationError):
        Change.from_data({"op": "drop_table"})
    with pytest.raises(ValidationError):
        Change("set_fact", key="k", value="  ")
    with pytest.raises(ValidationError):
        Change("set_commitment", key="c1")


def test_rendering_pins_facts_first_and_hides_history() -> None:
    doc = apply_all(
        {},
        [
            Change("set_fact", key="zeta", value="1"),
            Change("set_fact", key="account_number", value="111"),
            Change("correct_fact", key="account_number", value="48213"),
            Change("pin_fact", key="zeta"),
            Change("add_commitment", key="c1", value="I'll call you back.", status="active"),
            Change("add_commitment", key="c2", value="Refund issued.", status="fulfilled"),
            Change("add_commitment", key="c3", value="Cancelled.", status="revoked"),
        ],
    )
    text = render_state(doc)
    assert text.index("zeta") < text.index("account_number: 48213")
    assert "111" not in text and "Cancelled." not in text
    assert "I'll call you back." in text and "Refund issued." in text


# -- the keeper ----------------------------------------------------------------------------


async def test_sync_extracts_records_and_rebuilds(store: SQLiteStore) -> None:
    await support_session(store)
    keeper = StateKeeper(store)
    result = await keeper.sync("s1", tenant_id=T)
    facts = facts_of(result.state.data)
    assert facts["order_number"].value == "NW-48231"
    assert facts["order_number"].history[0].value == "NW-48213"
    assert facts["email"].value == "maria.lopez@example.com"
    assert {c.topic for c in commitments_of(result.state.data)} >= {"refund", "email"}
    events = await store.read(tenant_id=T, session_id="s1", limit=1000)
    state_events = [e for e in events if e.kind == "state"]
    assert [e.seq for e in state_events] == list(result.state_seqs)
    assert all(e.data["op"] and e.idempotency_key for e in state_events)
    assert public(rebuild_state(events)) == public(result.state.data)
    again = await keeper.sync("s1", tenant_id=T)  # nothing new: no write, same version
    assert again.state.version == result.state.version and again.changes == ()


async def test_only_new_events_are_read(store: SQLiteStore) -> None:
    await support_session(store)
    keeper = StateKeeper(store)
    await keeper.sync("s1", tenant_id=T)
    await store.append(
        tenant_id=T,
        session_id="s1",
        events=[NewEvent.message("user", "My new phone number is +1 415 555 0100.")],
    )
    seen: list[int] = []
    real_read = store.read

    async def spy(**kwargs: object) -> list[Event]:
        out = await real_read(**kwargs)  # type: ignore[arg-type]
        seen.extend(e.seq for e in out)
        return out

    store.read = spy  # type: ignore[method-assign]
    result = await keeper.sync("s1", tenant_id=T)
    assert facts_of(result.state.data)["phone"].value == "+1 415 555 0100"
    assert min(seen) > 14  # the 14 imported events were not read again


async def test_explicit_api_is_logged(store: SQLiteStore) -> None:
    await store.create_session(tenant_id=T, session_id="s2")
    keeper = StateKeeper(store)
    await keeper.set_fact("s2", "Account Number", "48123", tenant_id=T, pinned=True)
    await keeper.correct_fact("s2", "account_number", "48213", tenant_id=T)
    doc = await keeper.add_commitment("s2", "Refund approved", tenant_id=T, topic="refund")
    cid = commitments_of(doc.data)[0].id
    await keeper.set_commitment("s2", cid, "fulfilled", tenant_id=T)
    await keeper.set_goal("s2", "Get the refund", tenant_id=T)
    await keeper.set_fact("s2", "email", "x@example.com", tenant_id=T)
    doc = await keeper.delete_fact("s2", "email", tenant_id=T)
    fact = facts_of(doc.data)["account_number"]
    assert fact.value == "48213" and fact.pinned and fact.history[0].value == "48123"
    assert (
        commitments_of(doc.data)[0].status == "fulfilled" and doc.data["goal"] == "Get the refund"
    )
    assert "email" not in facts_of(doc.data)
    events = await store.read(tenant_id=T, session_id="s2", limit=100)
    assert [e.data["op"] for e in events] == [
        "set_fact",
        "correct_fact",
        "add_commitment",
        "set_commitment",
        "set_goal",
        "set_fact",
        "delete_fact",
    ]
    assert public(rebuild_state(events)) == public(doc.data)


async def test_extraction_running_behind_never_undoes_an_api_write(store: SQLiteStore) -> None:
    """The keeper runs after the turn, so the API can write before it has extracted the
    messages it will: what those older messages said must not undo the write."""
    said = "My name is Bob and my order number is NW-48213."
    await store.create_session(tenant_id=T, session_id="late")
    await store.append(
        tenant_id=T,
        session_id="late",
        events=[NewEvent.message("user", said), NewEvent.message("assistant", "Thanks Bob.")],
    )
    keeper = StateKeeper(store)
    await keeper.correct_fact("late", "order_number", "NW-99999", tenant_id=T)
    await keeper.delete_fact("late", "name", tenant_id=T)
    doc = (await keeper.sync("late", tenant_id=T)).state
    assert {k: f.value for k, f in facts_of(doc.data).items()} == {"order_number": "NW-99999"}
    # Said again after the writes, it counts.
    await store.append(
        tenant_id=T, session_id="late", events=[NewEvent.message("user", "My name is Bob.")]
    )
    doc = (await keeper.sync("late", tenant_id=T)).state
    assert facts_of(doc.data)["name"].value == "Bob"
    assert facts_of(doc.data)["order_number"].value == "NW-99999"
    events = await store.read(tenant_id=T, session_id="late", limit=100)
    assert public(rebuild_state(events)) == public(doc.data)


async def test_extraction_running_behind_never_undoes_a_replace(store: SQLiteStore) -> None:
    await store.create_session(tenant_id=T, session_id="put")
    await store.append(
        tenant_id=T,
        session_id="put",
        events=[NewEvent.message("user", "My order number is NW-48213.")],
    )
    keeper = StateKeeper(store)
    await keeper.replace("put", {"facts": {}, "goal": "start over"}, tenant_id=T)
    doc = (await keeper.sync("put", tenant_id=T)).state
    assert facts_of(doc.data) == {} and doc.data["goal"] == "start over"


def test_the_fold_orders_by_what_was_said_not_by_arrival() -> None:
    later = Change("set_fact", key="city", value="Lisbon", seq=9)
    earlier = Change("set_fact", key="city", value="Porto", seq=4)
    assert facts_of(apply_all({}, [later, earlier]))["city"].value == "Lisbon"
    assert facts_of(apply_all({}, [earlier, later]))["city"].value == "Lisbon"
    gone = apply_all({}, [Change("delete_fact", key="city", seq=7), earlier])
    assert "city" not in facts_of(gone)
    again = apply_all(gone, [Change("set_fact", key="city", value="Faro", seq=8)])
    assert facts_of(again)["city"].value == "Faro"
    dropped = apply_all({}, [Change("delete_commitment", key="c3", seq=5)])
    assert commitments_of(apply_all(dropped, [Change("add_commitment", value="x", seq=3)])) == []


async def test_racing_keepers_write_each_change_once(store: SQLiteStore) -> None:
    await support_session(store)
    keepers = [StateKeeper(store) for _ in range(4)]
    results = await asyncio.gather(*(k.sync("s1", tenant_id=T) for k in keepers))
    doc = await store.get_state(tenant_id=T, session_id="s1")
    events = await store.read(tenant_id=T, session_id="s1", limit=1000)
    state_events = [e for e in events if e.kind == "state"]
    assert len(state_events) == max(len(r.changes) for r in results)  # one batch, replayed
    assert public(rebuild_state(events)) == public(doc.data)
    assert len(commitments_of(doc.data)) == len({c.id for c in commitments_of(doc.data)})


async def test_account_number_from_turn_2_is_in_the_context_at_turn_200(
    store: SQLiteStore,
) -> None:
    await store.create_session(tenant_id=T, session_id="long")
    engine = ContextEngine(store)
    keeper = StateKeeper(store)
    topics = ["shipping zones", "gift wrapping", "loyalty points", "store hours", "sizes"]
    for turn in range(1, 201):
        if turn == 2:
            user = "For the record, my account number is 7730-4418-22."
        else:
            user = f"Turn {turn}: tell me more about {topics[turn % 5]} and how they work."
        answer = f"Here is what I know about {topics[turn % 5]}: it depends on the region. " * 3
        await engine.append(
            "long",
            [NewEvent.message("user", user), NewEvent.message("assistant", answer)],
            tenant_id=T,
        )
        await keeper.sync("long", tenant_id=T)
        if turn % 20 == 0:
            await engine.build("long", "What can you tell me?", tenant_id=T, budget=1000)
            await engine.drain()
    built = await engine.build("long", "Which account is this about?", tenant_id=T, budget=1000)
    await engine.drain()
    assert built.manifest.used <= 1000
    pinned = [m for m in built.messages if "Session state:" in str(m.get("content"))]
    assert len(pinned) == 1 and "7730-4418-22" in str(pinned[0]["content"])
    assert 2 not in built.manifest.verbatim  # the turn itself left the window long ago


def test_rebuild_fills_time_and_seq_of_api_changes() -> None:
    at = datetime(2025, 5, 1, tzinfo=UTC)
    event = Event(
        seq=7,
        branch="main",
        created_at=at,
        kind="state",
        data=Change("set_fact", key="k", value="v").to_data(),
    )
    fact = facts_of(rebuild_state([event]))["k"]
    assert fact.seq == 7 and fact.at == at.isoformat()
