"""The per-session health report: one pass over the log, every detector, a score. Pure.

:func:`analyse` walks a session's events in order. It keeps two views of the state:

* the **stored** state: the ``state`` events in the log (what the
  :class:`~chatstate.state.service.StateKeeper` recorded), each applied from the event it
  was extracted from onwards (its source ``seq``), so a fact the user gave in a turn is
  known when that turn's answer is checked even though the keeper logged it after;
* the **derived** state: the stored one plus what the offline extractor reads from the
  messages no logged batch covers (a log written without a keeper, an imported
  transcript, the evaluation set).

Each assistant message is checked against the derived state before it (re-ask,
contradiction); each summary against the stored state (summary loss); then the message
detectors (inconsistency, length inflation, premature commitment) and context pressure
run over the whole list. The score starts at 1 and loses :data:`WEIGHTS` per flag.

:class:`HealthMetrics` turns reports and context manifests into Prometheus metrics.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from chatstate.context.manifest import Manifest
from chatstate.context.tokens import counter_for
from chatstate.health.detectors import DETECTORS, WEIGHTS, DetectorName, Flag, contradiction, re_ask
from chatstate.health.messages import (
    Said,
    SummarySpan,
    context_pressure,
    inconsistency,
    length_inflation,
    manifest_pressure,
    premature_commitment,
    summary_loss,
)
from chatstate.model import Event, JSONValue
from chatstate.state.changes import Change, commitments_of, facts_of
from chatstate.state.fold import apply_all, apply_in_place, change_of, empty_state
from chatstate.state.rules import RuleExtractor, spoken_text

__all__ = ["HealthMetrics", "HealthReport", "TurnSignal", "analyse", "check_turns"]

_CHAT = frozenset({"message", "tool_call", "tool_result"})


@dataclass(frozen=True, slots=True)
class TurnSignal:
    """What the report says about one chat message."""

    seq: int
    role: str
    tokens: int
    flags: tuple[DetectorName, ...]
    facts_known: int
    """Facts in the (derived) state before this message."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    score: float
    """1.0 for a session with no flags, down to 0.0."""
    flags: tuple[Flag, ...]
    turns: tuple[TurnSignal, ...]
    counts: Mapping[DetectorName, int]
    summaries: int = 0
    detectors: tuple[DetectorName, ...] = field(default=DETECTORS)
    skipped: tuple[tuple[int, str], ...] = ()
    """Stored events the report could not read, as (seq, reason); they are left out."""

    def flagged(self, detector: DetectorName) -> list[Flag]:
        return [f for f in self.flags if f.detector == detector]

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "score": self.score,
            "counts": {name: self.counts.get(name, 0) for name in self.detectors},
            "flags": [f.to_dict() for f in self.flags],
            "turns": [
                {
                    "seq": t.seq,
                    "role": t.role,
                    "tokens": t.tokens,
                    "flags": list(t.flags),
                    "facts_known": t.facts_known,
                }
                for t in self.turns
            ],
            "messages": len(self.turns),
            "summaries": self.summaries,
            "detectors": list(self.detectors),
            "skipped": [{"seq": seq, "reason": why} for seq, why in self.skipped],
        }


def _logged(events: Sequence[Event]) -> tuple[list[tuple[int, int, Change]], int]:
    """The changes in the log ordered by the event they came from, and the highest seq
    an extraction batch covered."""
    out: list[tuple[int, int, Change]] = []
    covered = 0
    for event in events:
        change = change_of(event)
        if change is None:
            continue
        upto = event.data.get("batch_upto")
        if isinstance(upto, int) and not isinstance(upto, bool):
            covered = max(covered, upto)
        out.append((change.seq if change.seq is not None else event.seq, event.seq, change))
    out.sort(key=lambda item: (item[0], item[1]))
    return out, covered


class _Sweep:
    """One ordered pass over the events: the two state views, and the per-message checks."""

    def __init__(
        self,
        events: Sequence[Event],
        detectors: Collection[DetectorName],
        count: Callable[[str], int],
        rules: RuleExtractor,
    ) -> None:
        self.logged, self.covered = _logged(events)
        self.detectors = detectors
        self.count = count
        self.rules = rules
        self.derived, self.stored = empty_state(), empty_state()
        self.cursor = 0
        self.said: list[Said] = []
        self.seqs: list[int] = []
        self.summaries: list[SummarySpan] = []
        self.flags: list[Flag] = []
        self.known: dict[int, int] = {}
        self.since_user: list[str] = []

    def near(self, seq: int, window: int = 4) -> str:
        """The chat text of the ``window`` messages up to ``seq``."""
        end = bisect_right(self.seqs, seq)
        return " ".join(s.text for s in self.said[max(0, end - window - 1) : end])

    def catch_up(self, seq: int) -> None:
        """Apply the logged changes that came from events before ``seq``."""
        while self.cursor < len(self.logged) and self.logged[self.cursor][0] < seq:
            change = self.logged[self.cursor][2]
            apply_in_place(self.derived, [change])
            apply_in_place(self.stored, [change])
            self.cursor += 1

    def summary(self, event: Event) -> None:
        span = _span(event)
        if span is None:
            return
        self.summaries.append(span)
        if "summary_loss" in self.detectors:
            old = [h.value for f in facts_of(self.derived).values() for h in f.history]
            stored = facts_of(self.stored)
            self.flags += summary_loss(span, self.said, stored, superseded=old)

    def message(self, event: Event) -> None:
        text = spoken_text(event)
        tokens = event.token_count if event.token_count is not None else self.count(text)
        self.said.append(Said(event.seq, str(event.role), text, tokens))
        self.seqs.append(event.seq)
        facts = facts_of(self.derived)
        self.known[event.seq] = len(facts)
        if event.role == "assistant" and text:
            goal_seq = self.derived.get("goal_seq")
            task = goal_seq if isinstance(goal_seq, int) else None
            if "re_ask" in self.detectors:
                self.flags += re_ask(
                    event.seq, text, facts, context=self.since_user, task_since=task
                )
            if "contradiction" in self.detectors:
                commitments = commitments_of(self.derived)
                self.flags += contradiction(event.seq, text, facts, commitments, near=self.near)
        self.since_user = [] if event.role == "user" else [*self.since_user, text]
        if event.seq > self.covered and event.role in ("user", "assistant") and text:
            found = self.rules.message_changes(
                text,
                role=str(event.role),
                seq=event.seq,
                at=event.created_at.isoformat(),
                state=self.derived,
            )
            apply_in_place(self.derived, found)

    def finish(self, budget: int | None, manifests: Mapping[int, Manifest]) -> list[Flag]:
        chat = [s for s in self.said if s.role in ("user", "assistant")]
        flags = self.flags
        if "inconsistency" in self.detectors:
            flags += inconsistency(chat)
        if "length_inflation" in self.detectors:
            flags += length_inflation(chat)
        if "premature_commitment" in self.detectors:
            flags += premature_commitment(chat)
        if "context_pressure" in self.detectors:
            flags += context_pressure(self.said, self.summaries, budget=budget)
            for seq, manifest in sorted(manifests.items()):
                flags += manifest_pressure(manifest, seq=seq)
        flags.sort(key=lambda f: (f.seq, DETECTORS.index(f.detector)))
        return flags


def analyse(
    events: Sequence[Event],
    *,
    budget: int | None = None,
    manifests: Mapping[int, Manifest] | None = None,
    detectors: Collection[DetectorName] = DETECTORS,
    count: Callable[[str], int] | None = None,
    extractor: RuleExtractor | None = None,
) -> HealthReport:
    """The health report of one branch's events, oldest first (module docstring).

    ``budget``: the context budget the session runs under (context pressure from the log
    is skipped without it); ``manifests``: context manifests by the seq of the message
    they were built for; ``count``: a token counter for events without a stored count.
    """
    sweep = _Sweep(events, detectors, count or counter_for("gpt-4o").count,
                   extractor or RuleExtractor())  # fmt: skip
    skipped: list[tuple[int, str]] = []
    for event in events:
        if event.unreadable is not None:
            skipped.append((event.seq, event.unreadable))
            continue
        sweep.catch_up(event.seq)
        if event.kind == "summary":
            sweep.summary(event)
        elif event.kind in _CHAT and event.role in ("user", "assistant", "tool"):
            sweep.message(event)
    flags = sweep.finish(budget, manifests or {})
    chosen = tuple(d for d in DETECTORS if d in detectors)
    report = _report(flags, sweep.said, sweep.known, sweep.summaries, chosen)
    return replace(report, skipped=tuple(skipped)) if skipped else report


def check_turns(
    events: Sequence[Event], state: Mapping[str, JSONValue], changes: Sequence[Change]
) -> list[Flag]:
    """Re-ask and contradiction flags for the assistant messages among ``events`` (the new
    ones, oldest first): each checked against ``state`` plus the ``changes`` that came
    from earlier events. What the :class:`~chatstate.state.service.StateKeeper` runs per
    batch, so a turn's flags are stored when the turn is recorded."""
    pending = sorted((c for c in changes if c.seq is not None), key=lambda c: c.seq or 0)
    sweep = _Sweep([], ("re_ask", "contradiction"), len, RuleExtractor())
    sweep.derived = apply_all(state, [])  # a private copy to fold into
    sweep.covered = max((e.seq for e in events), default=0)  # extraction is done already
    index = 0
    for event in events:
        while index < len(pending) and (pending[index].seq or 0) < event.seq:
            apply_in_place(sweep.derived, [pending[index]])
            index += 1
        if event.kind in _CHAT and event.role in ("user", "assistant", "tool"):
            sweep.message(event)
    return sweep.flags


def _span(event: Event) -> SummarySpan | None:
    data = event.data
    lo, hi, text = data.get("from_seq"), data.get("to_seq"), data.get("text")
    if isinstance(lo, int) and isinstance(hi, int) and isinstance(text, str):
        return SummarySpan(event.seq, lo, hi, text)
    return None


def _report(
    flags: list[Flag],
    said: list[Said],
    known: dict[int, int],
    summaries: list[SummarySpan],
    detectors: tuple[DetectorName, ...],
) -> HealthReport:
    by_seq: dict[int, list[DetectorName]] = {}
    counts: dict[DetectorName, int] = dict.fromkeys(detectors, 0)
    for flag in flags:
        by_seq.setdefault(flag.seq, []).append(flag.detector)
        counts[flag.detector] = counts.get(flag.detector, 0) + 1
    turns = tuple(
        TurnSignal(s.seq, s.role, s.tokens, tuple(by_seq.get(s.seq, ())), known.get(s.seq, 0))
        for s in said
        if s.role in ("user", "assistant")
    )
    score = max(0.0, 1.0 - sum(WEIGHTS[f.detector] for f in flags))
    return HealthReport(round(score, 3), tuple(flags), turns, counts, len(summaries), detectors)


# -- metrics -------------------------------------------------------------------------------
# Prometheus text format 0.0.4 without a dependency. Labels are bounded by construction:
# ``detector`` (seven names), ``role`` (user, assistant); never a session, tenant or user
# id. The metric names are listed in docs/state-and-health.md.

SCORE_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0)
FLAG_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0)
TOKEN_BUCKETS = (16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0)
RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 0.95, 1.0)
_ROLES = ("user", "assistant")


class _Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        out: list[str] = []
        running = 0
        sep = "," if labels else ""
        for bound, hits in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += hits
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.sum:g}")
        out.append(f"{name}_count{suffix} {running}")
        return out


class HealthMetrics:
    """Counters and histograms of session health (see the module docstring)."""

    def __init__(self, *, prefix: str = "chatstate") -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self.sessions = 0
        self.flags: dict[DetectorName, int] = dict.fromkeys(DETECTORS, 0)
        self._per_session = {d: _Histogram(FLAG_BUCKETS) for d in DETECTORS}
        self._score = _Histogram(SCORE_BUCKETS)
        self._tokens = {r: _Histogram(TOKEN_BUCKETS) for r in _ROLES}
        self._budget = _Histogram(RATIO_BUCKETS)
        self.silent_truncations = 0

    def observe_report(self, report: HealthReport, *, turns_after: int = 0) -> None:
        """Count one analysed session; ``turns_after``: only this report's turns with a
        higher seq feed the token histogram (for incremental reports of one session)."""
        with self._lock:
            self.sessions += 1
            self._score.observe(report.score)
            for detector in DETECTORS:
                n = report.counts.get(detector, 0)
                self.flags[detector] += n
                self._per_session[detector].observe(n)
            for turn in report.turns:
                if turn.seq > turns_after and turn.role in self._tokens:
                    self._tokens[turn.role].observe(turn.tokens)

    def observe_flags(self, flags: Iterable[Flag]) -> None:
        """Count flags raised turn by turn (the state keeper's re-asks and contradictions)."""
        with self._lock:
            for flag in flags:
                self.flags[flag.detector] += 1

    def observe_manifest(self, manifest: Manifest) -> None:
        with self._lock:
            if manifest.budget > 0:
                self._budget.observe(manifest.used / manifest.budget)
            if manifest.silent_truncation:
                self.silent_truncations += 1

    def render(self) -> str:
        p = self._prefix
        with self._lock:
            lines = [
                f"# HELP {p}_health_sessions_total Sessions whose health was analysed.",
                f"# TYPE {p}_health_sessions_total counter",
                f"{p}_health_sessions_total {self.sessions}",
                f"# HELP {p}_health_flags_total Health flags raised, by detector.",
                f"# TYPE {p}_health_flags_total counter",
            ]
            lines += [
                f'{p}_health_flags_total{{detector="{d}"}} {self.flags[d]}' for d in DETECTORS
            ]
            lines += [
                f"# HELP {p}_health_session_flags Flags per analysed session, by detector.",
                f"# TYPE {p}_health_session_flags histogram",
            ]
            for d in DETECTORS:
                lines += self._per_session[d].lines(f"{p}_health_session_flags", f'detector="{d}"')
            lines += [
                f"# HELP {p}_health_score Session health score (1 is healthy).",
                f"# TYPE {p}_health_score histogram",
                *self._score.lines(f"{p}_health_score"),
                f"# HELP {p}_turn_tokens Tokens per chat message, by role.",
                f"# TYPE {p}_turn_tokens histogram",
            ]
            for role in _ROLES:
                lines += self._tokens[role].lines(f"{p}_turn_tokens", f'role="{role}"')
            lines += [
                f"# HELP {p}_context_budget_used_ratio Share of the budget a built context used.",
                f"# TYPE {p}_context_budget_used_ratio histogram",
                *self._budget.lines(f"{p}_context_budget_used_ratio"),
                f"# HELP {p}_context_silent_truncations_total Builds that dropped events "
                "no summary covered.",
                f"# TYPE {p}_context_silent_truncations_total counter",
                f"{p}_context_silent_truncations_total {self.silent_truncations}",
            ]
        return "\n".join(lines) + "\n"
