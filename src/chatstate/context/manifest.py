"""The manifest: what went into a context, what was left out, and why.

Returned with every assembled context so truncation is never silent:

* ``sections``: tokens per section (system, state, summary, retrieved, recent, current);
* ``verbatim``: seqs sent as they are; ``retrieved``: older turns brought back, with the
  retriever's score; ``summary``: the summary event used and the seqs it covers;
* ``dropped``: seqs neither sent nor covered by the summary; ``excluded``: seqs left out
  on purpose by a repair, with the reason;
* ``silent_truncation``: true when anything was dropped with no summary covering it;
* ``reasons``: why each section got its tokens (the message's intent, the room offered);
* ``prefix_tokens`` / ``stable_prefix_tokens``: the cacheable prefix (system, state,
  summary) and how much of it is unchanged since the previous build of this session.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from chatstate.model import JSONValue

__all__ = ["Manifest", "RetrievedTurn", "SummaryUse"]

SECTIONS = ("system", "state", "summary", "retrieved", "recent", "current")


@dataclass(frozen=True, slots=True)
class SummaryUse:
    seq: int
    """The ``summary`` event used."""
    from_seq: int
    to_seq: int
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class RetrievedTurn:
    seqs: tuple[int, ...]
    score: float
    cut: tuple[int, ...] = ()
    """Seqs sent as some of their sentences only (those sharing words with the message)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    model: str
    budget: int
    used: int
    sections: dict[str, int]
    verbatim: tuple[int, ...]
    retrieved: tuple[RetrievedTurn, ...]
    summary: SummaryUse | None
    dropped: tuple[int, ...]
    excluded: tuple[tuple[int, str], ...]
    prefix_tokens: int
    stable_prefix_tokens: int
    prefix_hashes: tuple[str, ...] = field(repr=False, default=())
    uncovered_before: int | None = None
    """Seqs below this (and above the summary) were not examined: compaction is behind."""
    state_truncated: bool = False
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each section got what it got (``intent``, ``state``, ``summary``,
    ``retrieved``, ``recent``, ``fill``): one line each, for people reading a manifest."""

    @property
    def silent_truncation(self) -> bool:
        return bool(self.dropped) or self.uncovered_before is not None

    def to_dict(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = asdict(self)
        del out["prefix_hashes"]
        out["silent_truncation"] = self.silent_truncation
        return out
