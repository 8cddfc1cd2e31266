"""What the inspector's Sessions and Timeline pages show, read through the store's API.

Nothing here writes. Every read names the caller's tenant, so another tenant's session
is simply not found. Reads are bounded: a sessions row looks at the newest
:data:`ROW_SCAN` events of its main branch, a timeline lane shows :data:`LANE_PAGE` events
at a time (older ones one link away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from chatstate.errors import ChatstateError, NotFound
from chatstate.health.detectors import WEIGHTS
from chatstate.model import Branch, Event, JSONValue, Session
from chatstate.server.gateway import response_of
from chatstate.server.sse import collect
from chatstate.server.streams import ResponseLog
from chatstate.store.protocol import Store

__all__ = [
    "LANE_PAGE",
    "ROW_SCAN",
    "Lane",
    "Pending",
    "SessionRow",
    "Timeline",
    "pending_answer",
    "read_lane",
    "session_rows",
    "severity",
    "timeline",
    "worst_flag",
]

ROW_SCAN = 2000
LANE_PAGE = 300
SEARCH_SCAN = 5000
_CHAT = frozenset({"message", "tool_call", "tool_result"})


def severity(detector: str) -> str:
    """``high``/``medium``/``low`` from how much one flag costs the session's score."""
    weight = WEIGHTS.get(detector, 0.0)  # type: ignore[call-overload]
    return "high" if weight >= 0.2 else "medium" if weight >= 0.1 else "low"


@dataclass(frozen=True, slots=True)
class SessionRow:
    session: Session
    events: int
    turns: int
    tokens: int
    capped: bool
    """More than :data:`ROW_SCAN` events: turns and tokens count the newest only."""
    branches: int
    worst: dict[str, JSONValue] | None


def worst_flag(state: dict[str, JSONValue]) -> dict[str, JSONValue] | None:
    """The costliest flag the state keeper recorded under ``_health`` (newest on a tie)."""
    health = state.get("_health")
    flags = health.get("flags") if isinstance(health, dict) else None
    best: dict[str, JSONValue] | None = None
    best_weight = -1.0
    for flag in flags if isinstance(flags, list) else []:
        if not isinstance(flag, dict) or not isinstance(flag.get("detector"), str):
            continue
        weight = WEIGHTS.get(str(flag["detector"]), 0.0)  # type: ignore[call-overload]
        if weight >= best_weight:
            best, best_weight = flag, weight
    return best


async def _row(store: Store, session: Session) -> SessionRow:
    tenant = session.tenant_id
    branches = await store.list_branches(tenant_id=tenant, session_id=session.id)
    head = next((b.head_seq for b in branches if b.name == session.default_branch), 0)
    turns = tokens = seen = 0
    before: int | None = None
    while seen < ROW_SCAN:
        page = await store.read(
            tenant_id=tenant,
            session_id=session.id,
            branch=session.default_branch,
            before_seq=before,
            limit=min(500, ROW_SCAN - seen),
            order="desc",
        )
        for event in page:
            turns += event.kind == "message" and event.role == "user"
            tokens += event.token_count or 0
        seen += len(page)
        if len(page) < 500:
            break
        before = page[-1].seq
    state = await store.get_state(
        tenant_id=tenant, session_id=session.id, branch=session.default_branch
    )
    return SessionRow(
        session, head, turns, tokens, head > seen, len(branches), worst_flag(dict(state.data))
    )


async def session_rows(
    store: Store,
    tenant: str,
    *,
    user: str | None,
    query: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[SessionRow], str | None]:
    """One page of sessions, newest first, and the cursor of the next page.

    ``query`` matches session ids: an exact id is found directly; otherwise the newest
    :data:`SEARCH_SCAN` sessions are searched for ids containing it (one page, no cursor).
    """
    if not query:
        page = await store.list_sessions(tenant_id=tenant, user_id=user, limit=limit, cursor=cursor)
        return [await _row(store, s) for s in page.items], page.next_cursor
    found: list[Session] = []
    try:
        exact = await store.get_session(tenant_id=tenant, session_id=query)
        if user is None or exact.user_id == user:
            found.append(exact)
    except (NotFound, ChatstateError):
        pass
    scanned, next_cursor = 0, None
    needle = query.casefold()
    while scanned < SEARCH_SCAN and len(found) < limit:
        page = await store.list_sessions(
            tenant_id=tenant, user_id=user, limit=200, cursor=next_cursor
        )
        scanned += len(page.items)
        found += [s for s in page.items if needle in s.id.casefold() and s.id != query]
        next_cursor = page.next_cursor
        if next_cursor is None:
            break
    return [await _row(store, s) for s in found[:limit]], None


@dataclass(frozen=True, slots=True)
class Pending:
    """An answer still streaming (or ended but not stored yet) after a user message."""

    response_id: str
    after_seq: int
    status: str
    content: str
    tool_calls: tuple[str, ...]


@dataclass(slots=True)
class Lane:
    branch: Branch
    events: list[Event]
    older: int | None = None
    """The ``before`` cursor of older events of this lane, when there are any."""
    pending: Pending | None = None
    by_seq: dict[int, Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_seq = {e.seq: e for e in self.events}


@dataclass(slots=True)
class Timeline:
    session: Session
    lanes: list[Lane]
    seqs: list[int] = field(default_factory=list)
    """Every row of the grid: seqs shown in any lane, ascending."""
    forks: dict[int, list[str]] = field(default_factory=dict)
    """Fork seq -> branches that fork there."""
    paged: str | None = None
    """The lane shown before its newest events (``before``/``focus``): not live."""

    def cell(self, lane: Lane, seq: int) -> Event | None:
        return lane.by_seq.get(seq)


async def read_lane(
    store: Store, tenant: str, session_id: str, branch: Branch, *, after: int, before: int | None
) -> tuple[list[Event], int | None]:
    """Up to :data:`LANE_PAGE` newest events of ``branch`` in ``(after, before)``, oldest
    first, and the ``before`` cursor for older ones (None when there are none)."""
    floor = (branch.fork_seq or 0) if branch.parent is not None else 0
    page = await store.read(
        tenant_id=tenant,
        session_id=session_id,
        branch=branch.name,
        after_seq=max(after, floor),
        before_seq=before,
        limit=LANE_PAGE + 1,
        order="desc",
    )
    older = None
    if len(page) > LANE_PAGE:
        page = page[:LANE_PAGE]
        older = page[-1].seq
    page.reverse()
    return page, older


async def pending_answer(
    responses: ResponseLog, tenant: str, events: Sequence[Event]
) -> Pending | None:
    """The answer being streamed for the lane's newest user message, if there is one."""
    chat = [e for e in events if e.kind in _CHAT]
    last = chat[-1] if chat else None
    rid = response_of(last) if last is not None and last.role == "user" else None
    if rid is None or last is None:
        return None
    try:
        await responses.info(tenant, rid)
        records = await responses.read_all(rid)
    except ChatstateError:
        return None
    answer = collect(records)
    calls = tuple(c["name"] for _, c in sorted(answer.tool_calls.items()) if c.get("name"))
    return Pending(rid, last.seq, answer.status, answer.content, calls)


async def timeline(
    store: Store,
    responses: ResponseLog,
    tenant: str,
    session_id: str,
    *,
    lane: str | None = None,
    before: int | None = None,
    focus: int | None = None,
) -> Timeline:
    """Every branch as a lane. ``lane`` (default: the main branch) is shown before seq
    ``before``, or around ``focus`` when that seq is older than its newest page."""
    session = await store.get_session(tenant_id=tenant, session_id=session_id)
    target = lane or session.default_branch
    branches = await store.list_branches(tenant_id=tenant, session_id=session_id)
    branches.sort(key=lambda b: (b.name != session.default_branch, b.created_at, b.name))
    view = Timeline(session, [])
    seqs: set[int] = set()
    for branch in branches:
        cursor = before if branch.name == target else None
        events, older = await read_lane(store, tenant, session_id, branch, after=0, before=cursor)
        floor = branch.fork_seq or 0
        if (
            branch.name == target
            and cursor is None
            and events
            and floor < (focus or 0) < events[0].seq
        ):
            cursor = (focus or 0) + LANE_PAGE // 2
            events, older = await read_lane(
                store, tenant, session_id, branch, after=0, before=cursor
            )
        if cursor is not None:
            view.paged = branch.name
        row = Lane(branch, events, older)
        row.pending = (
            None if cursor is not None else await pending_answer(responses, tenant, events)
        )
        view.lanes.append(row)
        seqs |= {e.seq for e in events}
        if branch.parent is not None and branch.fork_seq is not None:
            view.forks.setdefault(branch.fork_seq, []).append(branch.name)
    view.seqs = sorted(seqs)
    return view
