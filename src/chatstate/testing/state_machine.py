"""A Hypothesis state machine that runs random operations on a backend and on the
in-memory model side by side and demands identical results (values or error types).

Both stores share one :class:`FakeClock`, so times compare equal. Each Hypothesis example
works in a fresh tenant, so one opened backend serves every example.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chatstate.errors import ChatstateError
from chatstate.model import NewEvent
from chatstate.store.backends.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import BackendSpec, FakeClock

__all__ = ["run_state_machine"]

_tenants = itertools.count()

SESSIONS = st.sampled_from(["s1", "s2", "s3"])
BRANCHES = st.sampled_from(["main", "b1", "b2"])
TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=20,
)
EVENTS = st.lists(
    st.builds(
        NewEvent,
        kind=st.just("message"),
        role=st.sampled_from(["user", "assistant"]),
        content=TEXT,
    ),
    min_size=1,
    max_size=4,
)


def run_state_machine(
    spec: BackendSpec, tmp_path: Path, *, max_examples: int = 25, steps: int = 30
) -> None:
    """Run the machine against ``spec``; raises on the first divergence from the model."""
    clock = FakeClock()
    config = StoreConfig(clock=clock)
    with asyncio.Runner() as runner:
        opened = spec.open(config, tmp_path)
        store = runner.run(opened.__aenter__())
        try:

            class Machine(_StoreMachine):
                pass

            Machine.runner = runner
            Machine.store = store
            Machine.clock = clock
            Machine.TestCase.settings = settings(
                max_examples=max_examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            Machine.TestCase().runTest()
        finally:
            runner.run(opened.__aexit__(None, None, None))


class _StoreMachine(RuleBasedStateMachine):
    runner: asyncio.Runner
    store: Store
    clock: FakeClock

    def __init__(self) -> None:
        super().__init__()
        self.model = MemoryStore(StoreConfig(clock=self.clock))
        self.tenant = f"t{next(_tenants)}"
        self.heads: dict[tuple[str, str], int] = {}

    def _both(self, call: Callable[[Store], Awaitable[Any]]) -> Any:
        """Run ``call`` on the model and the backend; they must agree."""
        expected: Any
        actual: Any
        try:
            expected = self.runner.run(_await(call(self.model)))
        except ChatstateError as exc:
            expected = type(exc)
        try:
            actual = self.runner.run(_await(call(self.store)))
        except ChatstateError as exc:
            actual = type(exc)
        assert actual == expected, f"backend gave {actual!r}, model {expected!r}"
        return expected

    @initialize()
    def start(self) -> None:
        self._both(lambda s: s.create_session(tenant_id=self.tenant, session_id="s1"))

    @rule(session=SESSIONS, ttl=st.none() | st.sampled_from([5.0, 60.0]))
    def create(self, session: str, ttl: float | None) -> None:
        self._both(
            lambda s: s.create_session(tenant_id=self.tenant, session_id=session, ttl_seconds=ttl)
        )

    @rule(
        session=SESSIONS,
        branch=BRANCHES,
        events=EVENTS,
        expect=st.none() | st.integers(0, 6),
        key=st.none() | st.sampled_from(["k1", "k2"]),
    )
    def append(
        self,
        session: str,
        branch: str,
        events: list[NewEvent],
        expect: int | None,
        key: str | None,
    ) -> None:
        self._both(
            lambda s: s.append(
                tenant_id=self.tenant,
                session_id=session,
                branch=branch,
                events=events,
                expected_seq=expect,
                idempotency_key=key,
            )
        )

    @rule(
        session=SESSIONS,
        new=st.sampled_from(["b1", "b2"]),
        src=BRANCHES,
        at=st.none() | st.integers(0, 6),
    )
    def fork(self, session: str, new: str, src: str, at: int | None) -> None:
        self._both(
            lambda s: s.fork(
                tenant_id=self.tenant,
                session_id=session,
                new_branch=new,
                from_branch=src,
                at_seq=at,
            )
        )

    @rule(
        session=SESSIONS,
        branch=BRANCHES,
        after=st.integers(0, 8),
        limit=st.integers(1, 10),
        desc=st.booleans(),
    )
    def read(self, session: str, branch: str, after: int, limit: int, desc: bool) -> None:
        self._both(
            lambda s: s.read(
                tenant_id=self.tenant,
                session_id=session,
                branch=branch,
                after_seq=0 if desc else after,
                before_seq=after + 1 if desc else None,
                limit=limit,
                order="desc" if desc else "asc",
            )
        )

    @rule(session=SESSIONS, branch=BRANCHES, version=st.integers(0, 3), value=TEXT)
    def put_state(self, session: str, branch: str, version: int, value: str) -> None:
        self._both(
            lambda s: s.put_state(
                tenant_id=self.tenant,
                session_id=session,
                branch=branch,
                data={"v": value},
                expected_version=version,
            )
        )

    @rule(session=SESSIONS)
    def delete(self, session: str) -> None:
        self._both(lambda s: s.delete_session(tenant_id=self.tenant, session_id=session))

    @rule(seconds=st.sampled_from([1.0, 30.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_listing(self) -> None:
        self._both(lambda s: _all_sessions(s, self.tenant))

    @invariant()
    def same_views(self) -> None:
        for session in ("s1", "s2", "s3"):
            self._both(partial(_everything, tenant=self.tenant, session=session))


async def _await(value: Awaitable[Any]) -> Any:
    return await value


async def _all_sessions(store: Store, tenant: str) -> list[Any]:
    page = await store.list_sessions(tenant_id=tenant, limit=2)
    items = list(page.items)
    while page.next_cursor is not None:
        page = await store.list_sessions(tenant_id=tenant, limit=2, cursor=page.next_cursor)
        items += page.items
    return items


async def _everything(store: Store, *, tenant: str, session: str) -> Any:
    branches = await store.list_branches(tenant_id=tenant, session_id=session)
    views = {
        b.name: await store.read(tenant_id=tenant, session_id=session, branch=b.name, limit=500)
        for b in branches
    }
    states = {
        b.name: await store.get_state(tenant_id=tenant, session_id=session, branch=b.name)
        for b in branches
    }
    return sorted(branches, key=lambda b: b.name), views, states
