"""Contract tests for what the store front adds: canonical idempotency fingerprints,
values returned as copies, and ``read_ranges``. Part of the conformance suite (re-exported
by :mod:`chatstate.testing.conformance`)."""

from __future__ import annotations

from typing import cast

import pytest

from chatstate.errors import BranchNotFound, IdempotencyMismatch, SessionNotFound, ValidationError
from chatstate.model import JSONValue, NewEvent, SeqRange
from chatstate.testing.plugin import MakeStore

__all__ = [
    "test_idempotency_fingerprint_ignores_key_order",
    "test_read_ranges_one_snapshot_many_ranges",
    "test_returned_values_are_copies",
]

T = "acme"


def _obj(value: object) -> dict[str, object]:
    """A returned mapping, as the plain dict a careless caller would mutate."""
    return cast(dict[str, object], value)


def _tool(data: dict[str, JSONValue]) -> NewEvent:
    return NewEvent(kind="state", data=data, extra={"b": 1, "a": [1, {"y": 2, "x": 3}]})


async def test_idempotency_fingerprint_ignores_key_order(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    first = await store.append(
        tenant_id=T,
        session_id="s",
        events=[_tool({"b": 2, "a": {"d": 4, "c": 3}})],
        idempotency_key="k",
    )
    reordered = NewEvent(
        kind="state",
        data={"a": {"c": 3, "d": 4}, "b": 2},
        extra={"a": [1, {"x": 3, "y": 2}], "b": 1},
    )
    again = await store.append(tenant_id=T, session_id="s", events=[reordered], idempotency_key="k")
    assert again.replayed
    assert again.events == first.events  # the stored body keeps the first key order
    assert list(again.events[0].data) == ["b", "a"]
    with pytest.raises(IdempotencyMismatch):  # a different value is still another payload
        await store.append(
            tenant_id=T,
            session_id="s",
            events=[_tool({"b": 2, "a": {"d": 4, "c": 30}})],
            idempotency_key="k",
        )
    with pytest.raises(IdempotencyMismatch):  # the branch is part of the payload
        await store.fork(tenant_id=T, session_id="s", new_branch="alt")
        await store.append(
            tenant_id=T, session_id="s", branch="alt", events=[reordered], idempotency_key="k"
        )


async def test_returned_values_are_copies(make_store: MakeStore) -> None:
    store = await make_store()
    made = await store.create_session(tenant_id=T, session_id="s", metadata={"app": "web"})
    made.metadata["app"] = "changed"  # type: ignore[index]
    got = await store.get_session(tenant_id=T, session_id="s")
    assert got.metadata == {"app": "web"}
    got.metadata["evil"] = True  # type: ignore[index]
    listed = (await store.list_sessions(tenant_id=T)).items[0]
    assert listed.metadata == {"app": "web"}
    written = await store.put_state(
        tenant_id=T, session_id="s", data={"facts": {"x": 1}}, expected_version=0
    )
    _obj(_obj(written.data)["facts"])["x"] = 2
    state = await store.get_state(tenant_id=T, session_id="s")
    _obj(_obj(state.data)["facts"])["y"] = 3
    _obj(state.data)["more"] = 1
    again = await store.get_state(tenant_id=T, session_id="s")
    assert (again.version, again.data) == (1, {"facts": {"x": 1}})
    result = await store.append(
        tenant_id=T, session_id="s", events=[NewEvent(kind="marker", data={"n": [1]})]
    )
    cast(list[int], result.events[0].data["n"]).append(2)
    (event,) = await store.read(tenant_id=T, session_id="s")
    cast(list[int], event.data["n"]).append(3)
    assert (await store.read(tenant_id=T, session_id="s"))[0].data == {"n": [1]}


async def test_read_ranges_one_snapshot_many_ranges(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(
        tenant_id=T, session_id="s", events=[NewEvent.message("user", str(i)) for i in range(1, 31)]
    )
    await store.fork(tenant_id=T, session_id="s", new_branch="alt", at_seq=10)
    await store.append(
        tenant_id=T,
        session_id="s",
        branch="alt",
        events=[NewEvent.message("user", f"alt{i}") for i in range(11, 16)],
    )
    window, hits, middle = await store.read_ranges(
        tenant_id=T,
        session_id="s",
        branch="alt",
        ranges=[
            SeqRange(limit=4, order="desc"),
            SeqRange(after_seq=1, before_seq=4),
            SeqRange(after_seq=8, before_seq=13),
        ],
    )
    assert [e.content for e in window] == ["alt15", "alt14", "alt13", "alt12"]
    assert [e.seq for e in hits] == [2, 3]
    assert [(e.seq, e.branch) for e in middle] == [
        (9, "main"),
        (10, "main"),
        (11, "alt"),
        (12, "alt"),
    ]
    for rng in (SeqRange(after_seq=25), SeqRange(limit=3, order="desc")):
        (got,) = await store.read_ranges(tenant_id=T, session_id="s", ranges=[rng])
        plain = await store.read(
            tenant_id=T,
            session_id="s",
            after_seq=rng.after_seq,
            before_seq=rng.before_seq,
            limit=rng.limit,
            order=rng.order,
        )
        assert got == plain
    assert await store.read_ranges(tenant_id=T, session_id="s", ranges=[]) == []
    with pytest.raises(ValidationError):
        await store.read_ranges(tenant_id=T, session_id="s", ranges=[SeqRange(limit=0)])
    with pytest.raises(ValidationError):
        await store.read_ranges(tenant_id=T, session_id="s", ranges=[SeqRange()] * 1000)
    with pytest.raises(BranchNotFound):
        await store.read_ranges(tenant_id=T, session_id="s", branch="nope", ranges=[SeqRange()])
    with pytest.raises(SessionNotFound):
        await store.read_ranges(tenant_id=T, session_id="gone", ranges=[SeqRange()])
