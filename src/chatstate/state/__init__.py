"""Session state: facts, corrections, commitments, the goal and open questions.

Pure cores (no backend imports): :mod:`~chatstate.state.changes` (the change model and
views of the document), :mod:`~chatstate.state.fold` (``apply`` and ``rebuild_state``),
the offline :class:`RuleExtractor` and the :class:`LLMExtractor`. One I/O module,
:mod:`~chatstate.state.service`, holds :class:`StateKeeper`, which runs an extractor
after each turn, records every change as a ``state`` event and keeps the versioned state
document that the context engine pins.
"""

from chatstate.state.changes import (
    Change,
    Commitment,
    CommitmentStatus,
    ExtractionUnavailable,
    Extractor,
    Fact,
    FactChange,
    commitments_of,
    facts_of,
)
from chatstate.state.fold import apply, empty_state, rebuild_state
from chatstate.state.llm import LLMExtractor
from chatstate.state.rules import RuleExtractor
from chatstate.state.service import StateKeeper, SyncResult

__all__ = [
    "Change",
    "Commitment",
    "CommitmentStatus",
    "ExtractionUnavailable",
    "Extractor",
    "Fact",
    "FactChange",
    "LLMExtractor",
    "RuleExtractor",
    "StateKeeper",
    "SyncResult",
    "apply",
    "commitments_of",
    "empty_state",
    "facts_of",
    "rebuild_state",
]
