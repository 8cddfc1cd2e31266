"""The Context, State and Health pages' data: manifests, the state document, health.

**Context of a past turn.** The engine does not store the manifest of each build, so the
inspector rebuilds it: the branch's events up to the chosen user message are replayed
into a private in-memory store (the state document folded from the ``state`` events up to
that seq), and the same :class:`~chatstate.context.engine.ContextEngine` builds from it
with the model and budget asked for. Nothing is written to the real store. The replay
reads at most :data:`REPLAY_LIMIT` events.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatstate.context.engine import BuiltContext, ContextEngine
from chatstate.context.tokens import model_info
from chatstate.errors import TooLarge
from chatstate.health import analyse
from chatstate.health.detectors import WEIGHTS, DetectorName
from chatstate.health.report import HealthReport
from chatstate.model import Event, JSONValue
from chatstate.state import commitments_of, facts_of, rebuild_state
from chatstate.state.changes import Commitment, Fact
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store

__all__ = [
    "REPLAY_LIMIT",
    "HealthView",
    "StateView",
    "context_at",
    "health_view",
    "read_branch",
    "state_view",
]

REPLAY_LIMIT = 20_000
_PAGE = 1000
_SECTION_ORDER = ("system", "state", "summary", "retrieved", "recent", "current")


async def read_branch(
    store: Store, tenant: str, session_id: str, branch: str, *, upto: int | None, limit: int
) -> list[Event]:
    """The branch's events ``1..upto`` (all when None), oldest first; at most ``limit``."""
    out: list[Event] = []
    while True:
        page = await store.read(
            tenant_id=tenant,
            session_id=session_id,
            branch=branch,
            after_seq=out[-1].seq if out else 0,
            before_seq=None if upto is None else upto + 1,
            limit=_PAGE,
        )
        out += page
        if len(out) > limit:
            raise TooLarge(f"more than {limit} events to read; the inspector stops here")
        if len(page) < _PAGE:
            return out


async def context_at(
    store: Store,
    tenant: str,
    session_id: str,
    *,
    branch: str,
    seq: int,
    model: str,
    budget: int | None,
) -> BuiltContext:
    """The context the engine builds for the user message at ``seq``, from the log as it
    stood then (replayed in memory; module docstring). The pinned state is the fold of the
    ``state`` events up to ``seq`` (none: no state, as before the keeper's first write)."""
    events = await read_branch(store, tenant, session_id, branch, upto=seq, limit=REPLAY_LIMIT)
    replay = MemoryStore()
    try:
        await replay.create_session(tenant_id=tenant, session_id=session_id)
        for start in range(0, len(events), 100):
            drafts = [e.draft() for e in events[start : start + 100]]
            await replay.append(tenant_id=tenant, session_id=session_id, events=drafts)
        if any(e.kind == "state" for e in events):
            await replay.put_state(
                tenant_id=tenant,
                session_id=session_id,
                data=rebuild_state(events),
                expected_version=0,
            )
        engine = ContextEngine(replay, auto_compact=False)
        try:
            return await engine.build(session_id, tenant_id=tenant, model=model, budget=budget)
        finally:
            await engine.aclose()
    finally:
        await replay.close()


def budget_of(model: str, budget: int | None) -> int:
    info = model_info(model)
    return budget if budget is not None else info.window - info.max_output


def section_bar(sections: dict[str, int], budget: int) -> list[tuple[str, int, float]]:
    """(section, tokens, percent of the budget) for the budget bar, in context order."""
    total = max(budget, sum(sections.values()), 1)
    return [
        (name, sections.get(name, 0), 100.0 * sections.get(name, 0) / total)
        for name in _SECTION_ORDER
        if sections.get(name, 0) > 0
    ]


@dataclass(frozen=True, slots=True)
class StateView:
    version: int
    facts: list[Fact]
    commitments: list[Commitment]
    questions: list[dict[str, JSONValue]]
    goal: str | None
    goal_seq: int | None


def state_view(version: int, doc: dict[str, JSONValue]) -> StateView:
    questions = doc.get("open_questions")
    goal, goal_seq = doc.get("goal"), doc.get("goal_seq")
    return StateView(
        version=version,
        facts=sorted(facts_of(doc).values(), key=lambda f: (f.seq or 0, f.key)),
        commitments=commitments_of(doc),
        questions=[q for q in questions if isinstance(q, dict)]
        if isinstance(questions, list)
        else [],
        goal=goal if isinstance(goal, str) else None,
        goal_seq=goal_seq if isinstance(goal_seq, int) else None,
    )


@dataclass(frozen=True, slots=True)
class HealthView:
    report: HealthReport
    series: list[tuple[int, float]]
    """(seq, the session's score counting the flags up to that message)."""
    chart: str
    """The SVG ``points`` of the score line, in a 600 x 120 box."""
    marks: list[tuple[float, float, DetectorName, int]]
    """(x, y, detector, seq) of each flagged message on the chart."""


def health_view(events: list[Event], budget: int | None) -> HealthView:
    report = analyse(events, budget=budget)
    by_seq: dict[int, float] = {}
    for flag in report.flags:
        by_seq[flag.seq] = by_seq.get(flag.seq, 0.0) + WEIGHTS[flag.detector]
    series: list[tuple[int, float]] = []
    lost = 0.0
    for turn in report.turns:
        lost += by_seq.pop(turn.seq, 0.0)
        series.append((turn.seq, round(max(0.0, 1.0 - lost), 3)))
    width, height, pad = 600.0, 120.0, 8.0
    step = (width - 2 * pad) / max(len(series) - 1, 1)
    points: list[str] = []
    where: dict[int, tuple[float, float]] = {}
    for i, (seq, score) in enumerate(series):
        x, y = pad + i * step, pad + (1.0 - score) * (height - 2 * pad)
        points.append(f"{x:.1f},{y:.1f}")
        where[seq] = (x, y)
    marks = [(*where[f.seq], f.detector, f.seq) for f in report.flags if f.seq in where]
    return HealthView(report, series, " ".join(points), marks)
