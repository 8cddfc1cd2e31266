"""Precision and recall of the detectors on a labelled set of conversations. Pure.

A case is one JSON object per line (``evals/detectors/cases.jsonl`` in the repository)::

    {"id": "support/bank-card/v1", "source": "...", "license": "...",
     "kind": "injected",                       # clean | injected | hard_negative | real
     "split": "dev",                           # dev (tuned on) | test (held out)
     "budget": null,                           # the context budget, for context_pressure
     "events": [{"role": "user", "content": "..."},
                {"summary": {"from_seq": 1, "to_seq": 8, "text": "..."}}, ...],
     "labels": [{"detector": "re_ask", "seq": 6}]}

Events get seqs 1, 2, 3, ... in order. A flag is a true positive when a label names its
detector and its ``seq``; every other flag is a false positive and every unmatched label
a false negative. Precision is ``tp / (tp + fp)`` and recall ``tp / (tp + fn)``, per
detector (``None`` when undefined: no flags, or no labels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chatstate.errors import ValidationError
from chatstate.health.detectors import DETECTORS, DetectorName, Flag
from chatstate.health.report import analyse
from chatstate.model import Event, JSONValue

__all__ = ["Case", "DetectorScore", "EvalResult", "evaluate", "load_cases", "render_table"]

_T0 = datetime(2025, 1, 1, tzinfo=UTC)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    events: tuple[Event, ...]
    labels: frozenset[tuple[DetectorName, int]]
    kind: str = "clean"
    budget: int | None = None
    source: str = ""
    split: str = "dev"
    """``dev``: used while tuning the detectors; ``test``: held out, never tuned on."""


@dataclass(slots=True)
class DetectorScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass(slots=True)
class EvalResult:
    scores: dict[DetectorName, DetectorScore] = field(
        default_factory=lambda: {d: DetectorScore() for d in DETECTORS}
    )
    cases: int = 0
    clean_cases: int = 0
    clean_flagged: int = 0
    misses: list[tuple[str, str, DetectorName, int]] = field(default_factory=list)
    """``(case id, "fp" or "fn", detector, seq)`` for every error, to read them."""

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "cases": self.cases,
            "clean_cases": self.clean_cases,
            "clean_cases_flagged": self.clean_flagged,
            "detectors": {
                name: {
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                    "precision": s.precision,
                    "recall": s.recall,
                }
                for name, s in self.scores.items()
            },
            "errors": [
                {"case": c, "error": e, "detector": d, "seq": s} for c, e, d, s in self.misses
            ],
        }


def _event(seq: int, item: JSONValue, where: str) -> Event:
    if not isinstance(item, dict):
        raise ValidationError(f"{where}: an event must be an object")
    at = _T0 + timedelta(seconds=seq)
    summary = item.get("summary")
    if isinstance(summary, dict):
        data = {k: summary.get(k) for k in ("from_seq", "to_seq", "text")}
        return Event(seq=seq, branch="main", created_at=at, kind="summary", data=data)
    role, content = item.get("role"), item.get("content")
    if role not in _ROLES or not isinstance(content, str):
        raise ValidationError(f"{where}: needs a role (user, assistant, system) and content")
    return Event(
        seq=seq,
        branch="main",
        created_at=at,
        kind="message",
        role=_ROLES[str(role)],  # type: ignore[arg-type]  # one of the three roles above
        content=content,
    )


def parse_case(raw: JSONValue, where: str = "case") -> Case:
    """One case from its JSON object (see the module docstring)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("events"), list):
        raise ValidationError(f"{where}: a case is an object with an events list")
    items = raw["events"]
    assert isinstance(items, list)  # noqa: S101 - checked just above
    events = tuple(_event(i, item, f"{where} event {i}") for i, item in enumerate(items, start=1))
    labels: set[tuple[DetectorName, int]] = set()
    for label in raw.get("labels") or []:  # type: ignore[union-attr]
        if not isinstance(label, dict) or label.get("detector") not in DETECTORS:
            raise ValidationError(f"{where}: labels need a known detector name")
        seq = label.get("seq")
        if not isinstance(seq, int) or not 1 <= seq <= len(events):
            raise ValidationError(f"{where}: a label's seq must name one of its events")
        labels.add((label["detector"], seq))  # type: ignore[arg-type]  # checked above
    budget = raw.get("budget")
    return Case(
        id=str(raw.get("id", where)),
        events=events,
        labels=frozenset(labels),
        kind=str(raw.get("kind", "clean")),
        budget=budget if isinstance(budget, int) else None,
        source=str(raw.get("source", "")),
        split=str(raw.get("split", "dev")),
    )


def load_cases(path: Path) -> list[Case]:
    """Every case in a JSON Lines file (blank lines skipped)."""
    out: list[Case] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                out.append(parse_case(json.loads(line), f"{path.name}:{number}"))
    return out


def evaluate(cases: Iterable[Case], *, detectors: Sequence[DetectorName] = DETECTORS) -> EvalResult:
    """Run :func:`~chatstate.health.report.analyse` on every case and score the flags."""
    result = EvalResult()
    for case in cases:
        report = analyse(case.events, budget=case.budget, detectors=detectors)
        found: set[tuple[DetectorName, int]] = {(f.detector, f.seq) for f in report.flags}
        _score(result, case, found, report.flags)
    return result


def _score(
    result: EvalResult, case: Case, found: set[tuple[DetectorName, int]], flags: Iterable[Flag]
) -> None:
    result.cases += 1
    if not case.labels:
        result.clean_cases += 1
        result.clean_flagged += bool(found)
    del flags  # the (detector, seq) pairs are what is scored
    for detector, seq in sorted(found):
        if (detector, seq) in case.labels:
            result.scores[detector].tp += 1
        else:
            result.scores[detector].fp += 1
            result.misses.append((case.id, "fp", detector, seq))
    for detector, seq in sorted(case.labels - found):
        result.scores[detector].fn += 1
        result.misses.append((case.id, "fn", detector, seq))


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def render_table(result: EvalResult) -> str:
    """Precision and recall per detector as a text table."""
    lines = [
        f"{result.cases} cases ({result.clean_cases} without labels, "
        f"{result.clean_flagged} of them flagged)",
        "",
        f"{'detector':<22} {'precision':>9} {'recall':>7} {'tp':>5} {'fp':>5} {'fn':>5}",
    ]
    for name, s in result.scores.items():
        lines.append(
            f"{name:<22} {_fmt(s.precision):>9} {_fmt(s.recall):>7} {s.tp:>5} {s.fp:>5} {s.fn:>5}"
        )
    return "\n".join(lines) + "\n"
