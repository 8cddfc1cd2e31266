"""The storage contract, as tests. Every backend must pass all of them.

Use it for your own backend: register a :class:`~chatstate.testing.backends.BackendSpec`,
add ``pytest_plugins = ["chatstate.testing.plugin"]`` to your ``conftest.py`` and
``from chatstate.testing.conformance import *`` in a test module.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from chatstate.errors import (
    AlreadyExists,
    BranchNotFound,
    IdempotencyMismatch,
    SeqConflict,
    SessionExpired,
    SessionNotFound,
    StateVersionConflict,
    TooLarge,
    ValidationError,
)
from chatstate.model import JSONValue, NewEvent, ToolCall
from chatstate.store.rules import StoreConfig, StoreLimits
from chatstate.testing.backends import FakeClock
from chatstate.testing.plugin import MakeStore

T = "acme"
OTHER = "globex"


def msg(text: str, role: str = "user") -> NewEvent:
    return NewEvent.message(role, text)  # type: ignore[arg-type]


# -- sessions ---------------------------------------------------------------------------


async def test_create_and_get_session(make_store: MakeStore) -> None:
    store = await make_store()
    made = await store.create_session(
        tenant_id=T, session_id="s1", user_id="u1", metadata={"app": "web", "n": 3}
    )
    got = await store.get_session(tenant_id=T, session_id="s1")
    assert got == made
    assert got.metadata == {"app": "web", "n": 3}
    assert got.user_id == "u1"
    assert got.created_at.tzinfo is not None
    branches = await store.list_branches(tenant_id=T, session_id="s1")
    assert [(b.name, b.head_seq, b.parent) for b in branches] == [("main", 0, None)]
    generated = await store.create_session(tenant_id=T)
    assert generated.id != "s1"
    assert (await store.get_session(tenant_id=T, session_id=generated.id)).id == generated.id


async def test_session_id_taken(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s1")
    with pytest.raises(AlreadyExists):
        await store.create_session(tenant_id=T, session_id="s1")


async def test_tenants_are_isolated(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="same", metadata={"who": "acme"})
    await store.create_session(tenant_id=OTHER, session_id="same", metadata={"who": "globex"})
    await store.append(tenant_id=T, session_id="same", events=[msg("acme secret")])
    assert await store.read(tenant_id=OTHER, session_id="same") == []
    other = await store.get_session(tenant_id=OTHER, session_id="same")
    assert other.metadata == {"who": "globex"}
    await store.put_state(tenant_id=T, session_id="same", data={"k": "acme"}, expected_version=0)
    assert (await store.get_state(tenant_id=OTHER, session_id="same")).version == 0
    await store.create_session(tenant_id=T, session_id="only-acme")
    with pytest.raises(SessionNotFound):
        await store.get_session(tenant_id=OTHER, session_id="only-acme")
    with pytest.raises(SessionNotFound):
        await store.read(tenant_id=OTHER, session_id="only-acme")
    listed = await store.list_sessions(tenant_id=OTHER)
    assert [s.id for s in listed.items] == ["same"]


async def test_missing_session_and_branch(make_store: MakeStore) -> None:
    store = await make_store()
    with pytest.raises(SessionNotFound):
        await store.get_session(tenant_id=T, session_id="nope")
    with pytest.raises(SessionNotFound):
        await store.append(tenant_id=T, session_id="nope", events=[msg("x")])
    with pytest.raises(SessionNotFound):
        await store.get_state(tenant_id=T, session_id="nope")
    with pytest.raises(SessionNotFound):
        await store.delete_session(tenant_id=T, session_id="nope")
    await store.create_session(tenant_id=T, session_id="s")
    with pytest.raises(BranchNotFound):
        await store.append(tenant_id=T, session_id="s", branch="b", events=[msg("x")])
    with pytest.raises(BranchNotFound):
        await store.read(tenant_id=T, session_id="s", branch="b")
    with pytest.raises(BranchNotFound):
        await store.fork(tenant_id=T, session_id="s", from_branch="b", new_branch="c")


async def test_list_sessions_pages_newest_first(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(StoreConfig(clock=clock))
    ids = []
    for i in range(25):
        clock.advance(1 if i % 5 else 0)  # some share a creation time
        sid = f"s{i:02d}"
        await store.create_session(
            tenant_id=T, session_id=sid, user_id=f"u{i % 3}", metadata={"even": i % 2 == 0}
        )
        ids.append(sid)
    await store.create_session(tenant_id=OTHER, session_id="foreign")
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_sessions(tenant_id=T, limit=7, cursor=cursor)
        assert len(page.items) <= 7
        seen += [s.id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    keys = [
        (s.created_at, s.id)
        for s in [await store.get_session(tenant_id=T, session_id=x) for x in seen]
    ]
    assert keys == sorted(keys, reverse=True)
    by_user = await store.list_sessions(tenant_id=T, user_id="u1", limit=100)
    assert {s.id for s in by_user.items} == {f"s{i:02d}" for i in range(25) if i % 3 == 1}
    even = await store.list_sessions(tenant_id=T, metadata={"even": True}, limit=100)
    assert {s.id for s in even.items} == {f"s{i:02d}" for i in range(0, 25, 2)}
    both = await store.list_sessions(tenant_id=T, user_id="u0", metadata={"even": False}, limit=100)
    assert {s.id for s in both.items} == {f"s{i:02d}" for i in range(25) if i % 6 == 3}
    with pytest.raises(ValidationError):
        await store.list_sessions(tenant_id=T, cursor="not-a-cursor!")


async def test_delete_session_is_hard(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k1")
    await store.fork(tenant_id=T, session_id="s", new_branch="b")
    await store.put_state(tenant_id=T, session_id="s", data={"x": 1}, expected_version=0)
    await store.delete_session(tenant_id=T, session_id="s")
    with pytest.raises(SessionNotFound):
        await store.get_session(tenant_id=T, session_id="s")
    # A new session with the same id starts empty: no events, state or idempotency left.
    await store.create_session(tenant_id=T, session_id="s")
    assert await store.read(tenant_id=T, session_id="s") == []
    assert (await store.get_state(tenant_id=T, session_id="s")).version == 0
    assert [b.name for b in await store.list_branches(tenant_id=T, session_id="s")] == ["main"]
    again = await store.append(
        tenant_id=T, session_id="s", events=[msg("other")], idempotency_key="k1"
    )
    assert not again.replayed


async def test_delete_sessions_of_user_and_tenant(make_store: MakeStore) -> None:
    store = await make_store()
    for i in range(6):
        await store.create_session(tenant_id=T, session_id=f"s{i}", user_id=f"u{i % 2}")
        await store.append(tenant_id=T, session_id=f"s{i}", events=[msg("hi")])
    await store.create_session(tenant_id=OTHER, session_id="s0", user_id="u0")
    assert await store.delete_sessions(tenant_id=T, user_id="u0") == 3
    left = await store.list_sessions(tenant_id=T)
    assert sorted(s.id for s in left.items) == ["s1", "s3", "s5"]
    assert await store.delete_sessions(tenant_id=T) == 3
    assert (await store.list_sessions(tenant_id=T)).items == ()
    assert (await store.get_session(tenant_id=OTHER, session_id="s0")).user_id == "u0"


# -- append and read --------------------------------------------------------------------


async def test_append_assigns_dense_seqs_and_round_trips(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    drafts = [
        NewEvent.message("system", "You are terse."),
        msg("What's the weather in Paris?"),
        NewEvent(
            kind="tool_call",
            role="assistant",
            content=None,
            tool_calls=(ToolCall(id="call_1", name="weather", arguments='{"city":"Paris"}'),),
        ),
        NewEvent(kind="tool_result", role="tool", content="18C", tool_call_id="call_1"),
        NewEvent(
            kind="message",
            role="user",
            content=(
                {"type": "text", "text": "and"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ),
            extra={"custom": [1, 2.5, None, True]},
        ),
        NewEvent(kind="summary", data={"from_seq": 1, "to_seq": 4, "text": "weather"}),
        NewEvent(kind="marker", data={"note": "x"}, token_count=3),
    ]
    result = await store.append(tenant_id=T, session_id="s", events=drafts[:3])
    assert (result.first_seq, result.last_seq, result.replayed) == (1, 3, False)
    assert [e.seq for e in result.events] == [1, 2, 3]
    result = await store.append(tenant_id=T, session_id="s", events=drafts[3:])
    assert (result.first_seq, result.last_seq) == (4, 7)
    events = await store.read(tenant_id=T, session_id="s")
    assert [e.seq for e in events] == list(range(1, 8))
    assert [e.draft() for e in events] == drafts
    assert all(e.branch == "main" for e in events)
    assert events[6].token_count == 3
    head = (await store.list_branches(tenant_id=T, session_id="s"))[0].head_seq
    assert head == 7


async def test_read_ranges_and_last(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg(str(i)) for i in range(1, 21)])

    async def seqs(**kw: object) -> list[int]:
        return [e.seq for e in await store.read(tenant_id=T, session_id="s", **kw)]  # type: ignore[arg-type]

    assert await seqs(after_seq=15) == [16, 17, 18, 19, 20]
    assert await seqs(after_seq=3, limit=4) == [4, 5, 6, 7]
    assert await seqs(order="desc", limit=3) == [20, 19, 18]
    assert await seqs(order="desc", before_seq=5) == [4, 3, 2, 1]
    assert await seqs(after_seq=5, before_seq=9) == [6, 7, 8]
    assert await seqs(after_seq=5, before_seq=9, order="desc", limit=2) == [8, 7]
    assert await seqs(after_seq=20) == []
    last = await store.read_last(tenant_id=T, session_id="s", n=4)
    assert [e.content for e in last] == ["17", "18", "19", "20"]
    assert len(await store.read_last(tenant_id=T, session_id="s", n=100)) == 20
    for bad in ({"limit": 0}, {"after_seq": -1}, {"order": "sideways"}, {"limit": 10**9}):
        with pytest.raises(ValidationError):
            await seqs(**bad)


async def test_paging_returns_every_event_once(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    for start in range(0, 1000, 100):
        await store.append(
            tenant_id=T, session_id="s", events=[msg(f"m{i}") for i in range(start, start + 100)]
        )
    forward: list[int] = []
    after = 0
    while page := await store.read(tenant_id=T, session_id="s", after_seq=after, limit=37):
        forward += [e.seq for e in page]
        after = page[-1].seq
    assert forward == list(range(1, 1001))
    backward: list[int] = []
    before = None
    while page := await store.read(
        tenant_id=T, session_id="s", before_seq=before, limit=37, order="desc"
    ):
        backward += [e.seq for e in page]
        before = page[-1].seq
    assert backward == list(range(1000, 0, -1))


async def test_expected_seq_conflict_writes_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg("a")], expected_seq=0)
    with pytest.raises(SeqConflict) as caught:
        await store.append(tenant_id=T, session_id="s", events=[msg("b")], expected_seq=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert caught.value.status == 409
    await store.append(tenant_id=T, session_id="s", events=[msg("b")], expected_seq=1)
    assert [e.content for e in await store.read(tenant_id=T, session_id="s")] == ["a", "b"]


async def test_concurrent_pairs_exactly_one_wins(make_store: MakeStore) -> None:
    """1,000 pairs of appends racing with the same expected_seq: one wins each pair."""
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    for head in range(1000):
        outcomes = await asyncio.gather(
            *(
                store.append(
                    tenant_id=T,
                    session_id="s",
                    events=[msg(f"{head}-{side}")],
                    expected_seq=head,
                )
                for side in "ab"
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, SeqConflict)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
    events = await store.read(tenant_id=T, session_id="s", limit=5000)
    assert [e.seq for e in events] == list(range(1, 1001))
    assert [str(e.content).split("-")[0] for e in events] == [str(i) for i in range(1000)]


async def test_concurrent_appends_without_expectation_are_ordered(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    results = await asyncio.gather(
        *(
            store.append(tenant_id=T, session_id="s", events=[msg(f"{i}a"), msg(f"{i}b")])
            for i in range(50)
        )
    )
    spans = sorted((r.first_seq, r.last_seq) for r in results)
    assert spans == [(i, i + 1) for i in range(1, 101, 2)]
    events = await store.read(tenant_id=T, session_id="s", limit=1000)
    for first in range(0, 100, 2):  # each append's two events stay together
        assert str(events[first].content)[:-1] == str(events[first + 1].content)[:-1]


# -- idempotency ------------------------------------------------------------------------


async def test_idempotent_replay(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    first = await store.append(
        tenant_id=T,
        session_id="s",
        events=[msg("hi"), msg("yo", "assistant")],
        idempotency_key="turn-1",
    )
    again = await store.append(
        tenant_id=T,
        session_id="s",
        events=[msg("hi"), msg("yo", "assistant")],
        idempotency_key="turn-1",
        expected_seq=0,  # a retry carries its original expectation
    )
    assert again.replayed and not first.replayed
    assert (again.first_seq, again.last_seq) == (1, 2)
    assert again.events == first.events
    assert all(e.idempotency_key == "turn-1" for e in again.events)
    assert len(await store.read(tenant_id=T, session_id="s")) == 2
    with pytest.raises(IdempotencyMismatch) as caught:
        await store.append(
            tenant_id=T, session_id="s", events=[msg("different")], idempotency_key="turn-1"
        )
    assert caught.value.status == 422
    assert len(await store.read(tenant_id=T, session_id="s")) == 2
    # Keys are scoped to their session.
    await store.create_session(tenant_id=T, session_id="t")
    elsewhere = await store.append(
        tenant_id=T,
        session_id="t",
        events=[msg("hi"), msg("yo", "assistant")],
        idempotency_key="turn-1",
    )
    assert not elsewhere.replayed


async def test_idempotency_keys_expire(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(StoreConfig(clock=clock, idempotency_ttl_seconds=3600))
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    clock.advance(1800)
    assert (
        await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    ).replayed
    clock.advance(1801)
    rerun = await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    assert not rerun.replayed and rerun.first_seq == 2
    assert (
        await store.append(tenant_id=T, session_id="s", events=[msg("a")], idempotency_key="k")
    ).first_seq == 2
    clock.advance(7200)
    await store.purge_expired()
    assert not (
        await store.append(tenant_id=T, session_id="s", events=[msg("b")], idempotency_key="k")
    ).replayed


# -- forks ------------------------------------------------------------------------------


async def test_fork_isolation(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(tenant_id=T, session_id="s", events=[msg(f"m{i}") for i in range(1, 6)])
    fork = await store.fork(tenant_id=T, session_id="s", new_branch="alt", at_seq=3)
    assert (fork.name, fork.parent, fork.fork_seq, fork.head_seq) == ("alt", "main", 3, 3)
    await store.append(
        tenant_id=T, session_id="s", branch="alt", events=[msg("alt4")], expected_seq=3
    )
    await store.append(tenant_id=T, session_id="s", events=[msg("m6")], expected_seq=5)
    alt = await store.read(tenant_id=T, session_id="s", branch="alt")
    main = await store.read(tenant_id=T, session_id="s")
    assert [(e.seq, e.content, e.branch) for e in alt] == [
        (1, "m1", "main"),
        (2, "m2", "main"),
        (3, "m3", "main"),
        (4, "alt4", "alt"),
    ]
    assert [e.content for e in main] == ["m1", "m2", "m3", "m4", "m5", "m6"]
    # A fork of a fork, below the first fork point.
    deep = await store.fork(
        tenant_id=T, session_id="s", new_branch="deep", from_branch="alt", at_seq=2
    )
    assert deep.head_seq == 2
    await store.append(tenant_id=T, session_id="s", branch="deep", events=[msg("d3")])
    got = await store.read(tenant_id=T, session_id="s", branch="deep")
    assert [e.content for e in got] == ["m1", "m2", "d3"]
    # A fork of a fork, above it, read backwards.
    deeper = await store.fork(tenant_id=T, session_id="s", new_branch="deeper", from_branch="alt")
    assert deeper.head_seq == 4
    await store.append(tenant_id=T, session_id="s", branch="deeper", events=[msg("x5")])
    back = await store.read(tenant_id=T, session_id="s", branch="deeper", order="desc")
    assert [e.content for e in back] == ["x5", "alt4", "m3", "m2", "m1"]
    last = await store.read_last(tenant_id=T, session_id="s", branch="deeper", n=3)
    assert [e.content for e in last] == ["m3", "alt4", "x5"]
    assert [e.content for e in await store.read(tenant_id=T, session_id="s", branch="alt")][
        -1
    ] == "alt4"
    empty = await store.fork(tenant_id=T, session_id="s", new_branch="empty", at_seq=0)
    assert await store.read(tenant_id=T, session_id="s", branch="empty") == []
    assert empty.head_seq == 0
    names = [b.name for b in await store.list_branches(tenant_id=T, session_id="s")]
    assert names[0] == "main" and sorted(names) == ["alt", "deep", "deeper", "empty", "main"]
    with pytest.raises(AlreadyExists):
        await store.fork(tenant_id=T, session_id="s", new_branch="alt")
    with pytest.raises(ValidationError):
        await store.fork(tenant_id=T, session_id="s", new_branch="far", at_seq=99)


# -- input policy -----------------------------------------------------------------------

TRICKY_TEXT = [
    "plain ascii",
    "emoji 👩‍👩‍👧‍👦 🇫🇷 and skin tone 👍🏽",
    "RTL: مرحبا بالعالم — שלום עולם",
    "combining: e\u0301 a\u0308 Z\u0335\u0321\u0327",
    "zero width: a\u200bb\u200dc\ufeff",
    'line\r\nbreaks\tand \\ backslashes "quotes" {braces} :colons: *stars*',
    "x" * 100_000,
    "",
]


async def test_unicode_round_trips_byte_for_byte(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s", metadata={"title": TRICKY_TEXT[1]})
    await store.append(tenant_id=T, session_id="s", events=[msg(t) for t in TRICKY_TEXT])
    events = await store.read(tenant_id=T, session_id="s")
    for event, text in zip(events, TRICKY_TEXT, strict=True):
        assert isinstance(event.content, str)
        assert event.content.encode("utf-8") == text.encode("utf-8")
    session = await store.get_session(tenant_id=T, session_id="s")
    assert session.metadata["title"] == TRICKY_TEXT[1]
    await store.put_state(
        tenant_id=T, session_id="s", data={"name": TRICKY_TEXT[2]}, expected_version=0
    )
    assert (await store.get_state(tenant_id=T, session_id="s")).data == {"name": TRICKY_TEXT[2]}


BAD_TEXT = ["nul \x00 inside", "lone high \ud800", "lone low \udfff end"]


@pytest.mark.parametrize("bad", BAD_TEXT)
async def test_nul_and_lone_surrogates_are_rejected(make_store: MakeStore, bad: str) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    attempts: list[NewEvent] = [
        msg(bad),
        NewEvent(kind="message", role="user", content=({"type": "text", "text": bad},)),
        NewEvent.message("user", "ok", name=bad),
        NewEvent(kind="marker", data={bad: 1}),
        NewEvent(kind="marker", data={"k": [bad]}),
        NewEvent(kind="message", role="user", content="ok", extra={"x": bad}),
        NewEvent(
            kind="tool_call",
            role="assistant",
            tool_calls=(ToolCall(id="c1", name="f", arguments=bad),),
        ),
    ]
    for event in attempts:
        with pytest.raises(ValidationError):
            await store.append(tenant_id=T, session_id="s", events=[msg("fine"), event])
    assert await store.read(tenant_id=T, session_id="s") == []
    with pytest.raises(ValidationError):
        await store.put_state(tenant_id=T, session_id="s", data={"k": bad}, expected_version=0)
    with pytest.raises(ValidationError):
        await store.create_session(tenant_id=T, session_id="t", metadata={"k": bad})
    with pytest.raises(ValidationError):
        await store.append(
            tenant_id=T, session_id="s", events=[NewEvent(kind="marker", data={"f": float("nan")})]
        )


BAD_IDS = [
    "",
    "a:b",
    "a*",
    "a?",
    "a[1]",
    "{tag}",
    "a\r\nb",
    "a b",
    "x" * 10_000,
    "é",
    "-lead",
    "a/b",
    "a\x00",
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
async def test_ids_are_validated(make_store: MakeStore, bad: str) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    calls = [
        store.create_session(tenant_id=bad, session_id="s"),
        store.create_session(tenant_id=T, session_id=bad),
        store.create_session(tenant_id=T, session_id="u", user_id=bad),
        store.get_session(tenant_id=T, session_id=bad),
        store.append(tenant_id=T, session_id="s", events=[msg("x")], branch=bad),
        store.append(tenant_id=T, session_id="s", events=[msg("x")], idempotency_key=bad),
        store.fork(tenant_id=T, session_id="s", new_branch=bad),
        store.read(tenant_id=bad, session_id="s"),
        store.list_sessions(tenant_id=T, metadata={bad: "v"}),
        store.delete_sessions(tenant_id=bad),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            await call
    assert await store.read(tenant_id=T, session_id="s") == []
    assert [s.id for s in (await store.list_sessions(tenant_id=T)).items] == ["s"]


async def test_event_shape_is_validated(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    bad_events = [
        NewEvent(kind="message", role=None, content="x"),
        NewEvent(kind="message", role="tool", content="x"),
        NewEvent(kind="tool_call", role="assistant"),
        NewEvent(kind="tool_result", role="tool", content="x"),
        NewEvent(kind="summary", role="assistant", data={"a": 1}),
        NewEvent(kind="bogus", role="user", content="x"),  # type: ignore[arg-type]
        NewEvent(kind="message", role="user", content="x", token_count=-1),
        NewEvent(
            kind="tool_call",
            role="assistant",
            tool_calls=(ToolCall(id="c", name="f", arguments="{}"),) * 2,
        ),
    ]
    for event in bad_events:
        with pytest.raises(ValidationError):
            await store.append(tenant_id=T, session_id="s", events=[event])
    with pytest.raises(ValidationError):
        await store.append(tenant_id=T, session_id="s", events=[])
    with pytest.raises(ValidationError):
        await store.append(tenant_id=T, session_id="s", events=[msg("x")], expected_seq=-1)
    assert await store.read(tenant_id=T, session_id="s") == []


async def test_size_limits(make_store: MakeStore) -> None:
    limits = StoreLimits(
        max_event_bytes=2000,
        max_append_bytes=5000,
        max_events_per_append=10,
        max_metadata_bytes=200,
        max_state_bytes=300,
    )
    store = await make_store(StoreConfig(limits=limits))
    await store.create_session(tenant_id=T, session_id="s")
    with pytest.raises(TooLarge) as caught:
        await store.append(tenant_id=T, session_id="s", events=[msg("x" * 3000)])
    assert caught.value.status == 413
    with pytest.raises(TooLarge):
        await store.append(tenant_id=T, session_id="s", events=[msg("y" * 1500)] * 4)
    with pytest.raises(TooLarge):
        await store.append(tenant_id=T, session_id="s", events=[msg("z")] * 11)
    with pytest.raises(TooLarge):
        await store.create_session(tenant_id=T, session_id="t", metadata={"k": "v" * 300})
    with pytest.raises(TooLarge):
        await store.put_state(
            tenant_id=T, session_id="s", data={"k": "v" * 400}, expected_version=0
        )
    assert await store.read(tenant_id=T, session_id="s") == []
    await store.append(tenant_id=T, session_id="s", events=[msg("y" * 1500)] * 3)
    assert len(await store.read(tenant_id=T, session_id="s")) == 3


# -- state document ---------------------------------------------------------------------


async def test_state_document_versions(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    empty = await store.get_state(tenant_id=T, session_id="s")
    assert (empty.version, dict(empty.data)) == (0, {})
    doc: dict[str, JSONValue] = {
        "facts": {"account": {"value": "48213", "seq": 3}},
        "list": [1, "two", None],
    }
    one = await store.put_state(tenant_id=T, session_id="s", data=doc, expected_version=0)
    assert one.version == 1 and one.data == doc
    with pytest.raises(StateVersionConflict) as caught:
        await store.put_state(tenant_id=T, session_id="s", data={}, expected_version=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    two = await store.put_state(tenant_id=T, session_id="s", data={"a": 2}, expected_version=1)
    assert two.version == 2
    got = await store.get_state(tenant_id=T, session_id="s")
    assert (got.version, got.data) == (2, {"a": 2})


async def test_concurrent_state_writes_one_wins(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    for version in range(50):
        outcomes = await asyncio.gather(
            *(
                store.put_state(
                    tenant_id=T, session_id="s", data={"w": w}, expected_version=version
                )
                for w in range(2)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, StateVersionConflict) for o in outcomes) == 1, outcomes
    assert (await store.get_state(tenant_id=T, session_id="s")).version == 50


# -- expiry -----------------------------------------------------------------------------


async def test_ttl_expiry_refresh_and_purge(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(StoreConfig(clock=clock))
    made = await store.create_session(tenant_id=T, session_id="s", ttl_seconds=60)
    assert made.expires_at is not None and made.ttl_seconds == 60
    await store.create_session(tenant_id=T, session_id="forever")
    clock.advance(50)
    await store.append(tenant_id=T, session_id="s", events=[msg("keep me")])  # refreshes
    clock.advance(50)
    assert len(await store.read(tenant_id=T, session_id="s")) == 1
    refreshed = await store.get_session(tenant_id=T, session_id="s")
    assert refreshed.expires_at is not None and refreshed.expires_at > clock.now
    clock.advance(61)
    for call in (
        store.get_session(tenant_id=T, session_id="s"),
        store.read(tenant_id=T, session_id="s"),
        store.append(tenant_id=T, session_id="s", events=[msg("late")]),
        store.get_state(tenant_id=T, session_id="s"),
    ):
        with pytest.raises(SessionExpired) as caught:
            await call
        assert caught.value.status == 410
    assert [s.id for s in (await store.list_sessions(tenant_id=T)).items] == ["forever"]
    assert await store.purge_expired() == 1
    with pytest.raises(SessionNotFound) as gone:
        await store.get_session(tenant_id=T, session_id="s")
    assert not isinstance(gone.value, SessionExpired)
    # The id is free again, and starts empty.
    await store.create_session(tenant_id=T, session_id="s")
    assert await store.read(tenant_id=T, session_id="s") == []


async def test_set_ttl(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(StoreConfig(clock=clock))
    await store.create_session(tenant_id=T, session_id="s")
    updated = await store.set_ttl(tenant_id=T, session_id="s", ttl_seconds=10)
    assert updated.ttl_seconds == 10
    cleared = await store.set_ttl(tenant_id=T, session_id="s", ttl_seconds=None)
    assert cleared.expires_at is None and cleared.ttl_seconds is None
    clock.advance(100)
    assert (await store.get_session(tenant_id=T, session_id="s")).id == "s"
    for bad in (0, -5, float("inf")):
        with pytest.raises(ValidationError):
            await store.set_ttl(tenant_id=T, session_id="s", ttl_seconds=bad)


# -- scale ------------------------------------------------------------------------------


async def test_hundred_thousand_events_read_by_pages(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="big")
    batch = 1000
    for start in range(0, 100_000, batch):
        await store.append(
            tenant_id=T,
            session_id="big",
            events=[msg(f"event {i}") for i in range(start, start + batch)],
        )
    after, count, rng = 0, 0, random.Random(7)
    while page := await store.read(
        tenant_id=T, session_id="big", after_seq=after, limit=rng.choice((500, 1000, 3000))
    ):
        assert page[0].seq == after + 1 and page[-1].seq == after + len(page)
        count += len(page)
        after = page[-1].seq
    assert count == 100_000
    last = await store.read_last(tenant_id=T, session_id="big", n=20)
    assert [e.content for e in last][-1] == "event 99999"


# The front's own contract (canonical fingerprints, copies, read_ranges), the cross-instance
# tests and the state per branch live next door.
from chatstate.testing.conformance_front import *  # noqa: E402, F403
from chatstate.testing.conformance_shared import *  # noqa: E402, F403
from chatstate.testing.conformance_state import *  # noqa: E402, F403
