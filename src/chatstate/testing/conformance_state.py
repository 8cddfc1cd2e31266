"""Contract tests for the state document per branch: each branch has its own document and
version, a fork starts with none (version 0) and its keeper's fold is the state as it stood
at the fork point, and deleting a session deletes every branch's document. Part of the
conformance suite (re-exported by :mod:`chatstate.testing.conformance`)."""

from __future__ import annotations

import pytest

from chatstate.errors import BranchNotFound, StateVersionConflict
from chatstate.model import NewEvent
from chatstate.state import StateKeeper, facts_of
from chatstate.testing.plugin import MakeStore

__all__ = [
    "test_deleting_a_session_deletes_every_branch_state",
    "test_fork_state_starts_at_the_fork_point",
    "test_state_is_per_branch",
]

T = "acme"


async def test_state_is_per_branch(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.append(
        tenant_id=T,
        session_id="s",
        events=[NewEvent.message("user", "a"), NewEvent.message("user", "b")],
    )
    await store.put_state(tenant_id=T, session_id="s", data={"on": "main"}, expected_version=0)
    await store.fork(tenant_id=T, session_id="s", new_branch="alt", at_seq=2)
    fresh = await store.get_state(tenant_id=T, session_id="s", branch="alt")
    assert (fresh.version, dict(fresh.data)) == (0, {})  # a fork starts with no document
    alt = await store.put_state(
        tenant_id=T, session_id="s", branch="alt", data={"on": "alt"}, expected_version=0
    )
    assert (alt.version, alt.data) == (1, {"on": "alt"})
    with pytest.raises(StateVersionConflict) as caught:
        await store.put_state(
            tenant_id=T, session_id="s", branch="alt", data={}, expected_version=0
        )
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    main = await store.put_state(
        tenant_id=T, session_id="s", data={"on": "main", "n": 2}, expected_version=1
    )
    assert main.version == 2
    got_main = await store.get_state(tenant_id=T, session_id="s", branch="main")
    got_alt = await store.get_state(tenant_id=T, session_id="s", branch="alt")
    assert (got_main.version, dict(got_main.data)) == (2, {"on": "main", "n": 2})
    assert (got_alt.version, dict(got_alt.data)) == (1, {"on": "alt"})
    assert (await store.get_state(tenant_id=T, session_id="s")).version == 2  # main by default
    # An unknown branch answers as read does.
    with pytest.raises(BranchNotFound):
        await store.read(tenant_id=T, session_id="s", branch="nope")
    with pytest.raises(BranchNotFound):
        await store.get_state(tenant_id=T, session_id="s", branch="nope")
    with pytest.raises(BranchNotFound):
        await store.put_state(
            tenant_id=T, session_id="s", branch="nope", data={"x": 1}, expected_version=0
        )


async def test_fork_state_starts_at_the_fork_point(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    main = StateKeeper(store)
    await store.append(
        tenant_id=T, session_id="s", events=[NewEvent.message("user", "My name is Maria Lopez.")]
    )
    await main.set_fact("s", "plan", "gold", tenant_id=T)
    synced = await main.sync("s", tenant_id=T)
    at_fork = synced.state
    head = (await store.read_last(tenant_id=T, session_id="s", n=1))[-1].seq
    await store.fork(tenant_id=T, session_id="s", new_branch="alt", at_seq=head)
    await main.set_fact("s", "city", "Lisbon", tenant_id=T)  # after the fork, on main

    assert (await store.get_state(tenant_id=T, session_id="s", branch="alt")).version == 0
    alt = StateKeeper(store, branch="alt")
    first = await alt.sync("s", tenant_id=T)
    assert first.state.version == 1
    assert dict(first.state.data) == dict(at_fork.data)  # the state as it stood at the fork
    assert first.state_seqs == ()  # main's extraction is in the shared prefix: none again

    await alt.set_fact("s", "pet", "cat", tenant_id=T)
    alt_facts = facts_of((await alt.get("s", tenant_id=T)).data)
    main_facts = facts_of((await main.get("s", tenant_id=T)).data)
    assert "pet" in alt_facts and "city" not in alt_facts
    assert "city" in main_facts and "pet" not in main_facts
    assert alt_facts["plan"].value == main_facts["plan"].value == "gold"


async def test_deleting_a_session_deletes_every_branch_state(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create_session(tenant_id=T, session_id="s")
    await store.fork(tenant_id=T, session_id="s", new_branch="alt")
    for branch in ("main", "alt"):
        await store.put_state(
            tenant_id=T, session_id="s", branch=branch, data={"b": branch}, expected_version=0
        )
    await store.delete_session(tenant_id=T, session_id="s")
    await store.create_session(tenant_id=T, session_id="s")
    await store.fork(tenant_id=T, session_id="s", new_branch="alt")
    for branch in ("main", "alt"):
        doc = await store.get_state(tenant_id=T, session_id="s", branch=branch)
        assert (doc.version, dict(doc.data)) == (0, {}), branch
