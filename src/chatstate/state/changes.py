"""Changes to the session state document, and typed views of the document. Pure.

Every change to a session's state is a :class:`Change`, stored in the log as one
``state`` event whose ``data`` is :meth:`Change.to_data` (``{"op": ..., ...}``). The
document is the fold of those changes (:func:`chatstate.state.fold.apply`) and has the
shape the context engine pins (:func:`chatstate.context.pinned.render_state`)::

    {
      "schema": 1,
      "goal": "get a refund for torn boots", "goal_seq": 2,
      "facts": {"order_number": {"value": "NW-48231", "seq": 6, "last_seq": 6, "at": "...",
                                 "confidence": 0.9, "source": "rules", "role": "user",
                                 "pinned": false,
                                 "history": [{"value": "NW-48213", "seq": 2, "at": "...",
                                              "replaced_seq": 6, "reason": "correction"}]}},
      "commitments": [{"id": "c12", "text": "I've issued a full refund", "topic": "refund",
                       "status": "fulfilled", "seq": 12, "at": "...", "source": "rules",
                       "role": "assistant"}],
      "open_questions": [{"id": "q9", "text": "When do I get my money back?", "seq": 9}],
      "_upto": 14
    }

``seq``/``at`` name the event a value came from (the message it was extracted from, or
the ``state`` event of an explicit API call). Keys starting with ``_`` are private.

An :class:`Extractor` reads the events appended since the last extraction and the
document as it stands, and returns the changes those events make, in order; it writes
nothing (the :class:`~chatstate.state.service.StateKeeper` appends and folds). Two ship:
:class:`~chatstate.state.rules.RuleExtractor` (offline, the default) and
:class:`~chatstate.state.llm.LLMExtractor` (any OpenAI-compatible endpoint, falling back
to the rules).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from chatstate.errors import BackendUnavailable, ValidationError
from chatstate.model import Event, JSONValue

__all__ = [
    "STATE_SCHEMA_VERSION",
    "Change",
    "Commitment",
    "CommitmentStatus",
    "ExtractionUnavailable",
    "Extractor",
    "Fact",
    "FactChange",
    "Op",
    "commitments_of",
    "fact_key",
    "facts_of",
    "normalise_value",
]

STATE_SCHEMA_VERSION = 1

Op = Literal[
    "set_fact",
    "correct_fact",
    "delete_fact",
    "pin_fact",
    "add_commitment",
    "set_commitment",
    "delete_commitment",
    "set_goal",
    "add_question",
    "resolve_question",
    "replace",
]
CommitmentStatus = Literal["active", "fulfilled", "revoked"]
Source = Literal["rules", "llm", "api"]
_OPS: frozenset[str] = frozenset(get_args(Op))
_STATUSES: frozenset[str] = frozenset(get_args(CommitmentStatus))
_SOURCES: frozenset[str] = frozenset(get_args(Source))
_KEY_NOISE = re.compile(r"[^a-z0-9]+")
_SPACE = re.compile(r"\s+")
MAX_TEXT = 500


def fact_key(label: str) -> str:
    """A fact key from a free label: ``"Account #"`` -> ``"account"``, lower snake case."""
    key = _KEY_NOISE.sub("_", label.lower()).strip("_")
    if not key or len(key) > 64:
        raise ValidationError(f"fact key must be 1-64 letters, digits or _, got {label!r}")
    return key


def normalise_value(value: str) -> str:
    """How values compare: case and spacing aside, trailing punctuation dropped."""
    return _SPACE.sub(" ", value.strip().strip(".,;:!?\"'")).casefold()


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the state document.

    ``key`` is the fact key, commitment id or question id; ``value`` the fact's value, the
    goal, a question's or a commitment's text. ``seq``/``at`` say where it came from;
    ``role`` who said it (``user``/``assistant``, or ``None`` for the API).
    """

    op: Op
    key: str | None = None
    value: str | None = None
    status: CommitmentStatus | None = None
    topic: str | None = None
    pinned: bool | None = None
    confidence: float = 1.0
    seq: int | None = None
    at: str | None = None
    source: Source = "api"
    role: str | None = None
    previous: str | None = None
    """For a correction: the value the speaker said was wrong, when they named it."""
    document: Mapping[str, JSONValue] | None = None
    """For ``replace``: the whole user document (``PUT /state``); the keeper's own
    ``_``-prefixed bookkeeping is never part of it."""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValidationError(f"unknown state op {self.op!r}")
        if self.source not in _SOURCES:
            raise ValidationError(f"unknown state change source {self.source!r}")
        if self.status is not None and self.status not in _STATUSES:
            raise ValidationError(f"commitment status must be one of {sorted(_STATUSES)}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValidationError("confidence must be between 0 and 1")
        needs_key = self.op not in ("set_goal", "add_commitment", "add_question", "replace")
        if needs_key and not self.key:
            raise ValidationError(f"{self.op} needs a key")
        needs_value = self.op in ("set_fact", "correct_fact", "add_commitment", "add_question")
        if needs_value and not (self.value and self.value.strip()):
            raise ValidationError(f"{self.op} needs a non-empty value")
        if self.value is not None and len(self.value) > MAX_TEXT:
            raise ValidationError(f"state values are at most {MAX_TEXT} characters")
        if self.op == "set_commitment" and self.status is None:
            raise ValidationError("set_commitment needs a status")

    def to_data(self) -> dict[str, JSONValue]:
        """The ``data`` of the ``state`` event that records this change."""
        out: dict[str, JSONValue] = {"op": self.op, "source": self.source}
        for name in ("key", "value", "status", "topic", "pinned", "seq", "at", "role"):
            item = getattr(self, name)
            if item is not None:
                out[name] = item
        if self.previous is not None:
            out["previous"] = self.previous
        if self.document is not None:
            out["document"] = dict(self.document)
        if self.confidence != 1.0:
            out["confidence"] = self.confidence
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, JSONValue], *, seq: int | None = None) -> Change:
        """The change a ``state`` event's data records; ``seq`` fills in a missing source
        seq (an API change names the ``state`` event itself). Raises ``ValidationError``."""

        def text(name: str) -> str | None:
            item = data.get(name)
            if item is None or isinstance(item, str):
                return item
            raise ValidationError(f"state change field {name!r} must be text")

        op, status, source = data.get("op"), data.get("status"), data.get("source", "api")
        if op not in _OPS or (status is not None and status not in _STATUSES):
            raise ValidationError(f"not a state change: op={op!r} status={status!r}")
        if source not in _SOURCES:
            raise ValidationError(f"unknown state change source {source!r}")
        source_seq = data.get("seq", seq)
        confidence = data.get("confidence", 1.0)
        pinned = data.get("pinned")
        if source_seq is not None and (
            isinstance(source_seq, bool) or not isinstance(source_seq, int)
        ):
            raise ValidationError("state change seq must be an integer")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise ValidationError("state change confidence must be a number")
        if pinned is not None and not isinstance(pinned, bool):
            raise ValidationError("state change pinned must be true or false")
        document = data.get("document")
        if (document is None) == (op == "replace") or not isinstance(document, dict | None):
            raise ValidationError("a replace carries a document object, nothing else does")
        return cls(
            op=op,  # type: ignore[arg-type]  # checked against _OPS above
            key=text("key"),
            value=text("value"),
            status=status,  # type: ignore[arg-type]  # checked against _STATUSES above
            topic=text("topic"),
            pinned=pinned,
            confidence=float(confidence),
            seq=source_seq,
            at=text("at"),
            source=source,  # type: ignore[arg-type]  # checked against _SOURCES above
            role=text("role"),
            previous=text("previous"),
            document=document,
        )


@dataclass(frozen=True, slots=True)
class FactChange:
    """A superseded value of a fact, kept in its history."""

    value: str
    seq: int | None
    replaced_seq: int | None
    reason: str
    """``correction`` (the speaker said it was wrong) or ``update``."""


@dataclass(frozen=True, slots=True)
class Fact:
    key: str
    value: str
    seq: int | None
    """The event that set the current value."""
    last_seq: int | None
    at: str | None
    confidence: float
    source: str
    role: str | None
    pinned: bool
    history: tuple[FactChange, ...]


@dataclass(frozen=True, slots=True)
class Commitment:
    id: str
    text: str
    topic: str | None
    status: CommitmentStatus
    seq: int | None
    role: str | None


def _int(value: JSONValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def facts_of(doc: Mapping[str, JSONValue]) -> dict[str, Fact]:
    """The document's current facts, by key (entries of another shape are skipped)."""
    raw = doc.get("facts")
    out: dict[str, Fact] = {}
    if not isinstance(raw, dict):
        return out
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            continue
        history = entry.get("history")
        changes = tuple(
            FactChange(
                value=str(h.get("value")),
                seq=_int(h.get("seq")),
                replaced_seq=_int(h.get("replaced_seq")),
                reason=_str(h.get("reason")) or "update",
            )
            for h in (history if isinstance(history, list) else [])
            if isinstance(h, dict) and isinstance(h.get("value"), str)
        )
        confidence = entry.get("confidence", 1.0)
        out[key] = Fact(
            key=key,
            value=str(entry["value"]),
            seq=_int(entry.get("seq")),
            last_seq=_int(entry.get("last_seq")) or _int(entry.get("seq")),
            at=_str(entry.get("at")),
            confidence=float(confidence) if isinstance(confidence, int | float) else 1.0,
            source=_str(entry.get("source")) or "api",
            role=_str(entry.get("role")),
            pinned=entry.get("pinned") is True,
            history=changes,
        )
    return out


def commitments_of(doc: Mapping[str, JSONValue]) -> list[Commitment]:
    """The document's commitments, oldest first (entries of another shape are skipped)."""
    raw = doc.get("commitments")
    out: list[Commitment] = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        cid, text, status = entry.get("id"), entry.get("text"), entry.get("status", "active")
        if isinstance(cid, str) and isinstance(text, str) and status in _STATUSES:
            out.append(
                Commitment(
                    id=cid,
                    text=text,
                    topic=_str(entry.get("topic")),
                    status=status,  # type: ignore[arg-type]  # checked against _STATUSES
                    seq=_int(entry.get("seq")),
                    role=_str(entry.get("role")),
                )
            )
    return out


# -- extractors ------------------------------------------------------------------------


@runtime_checkable
class Extractor(Protocol):
    name: str
    """Recorded in each change's ``source`` (``rules`` or ``llm``)."""

    async def extract(
        self, *, events: Sequence[Event], state: Mapping[str, JSONValue]
    ) -> list[Change]:
        """The changes ``events`` (oldest first) make to ``state``."""
        ...


class ExtractionUnavailable(BackendUnavailable):
    """The extractor gave no usable answer (and had no fallback); nothing was written.

    ``reason`` says why: ``http``, ``timeout``, ``connection``, ``bad_response`` (not a
    chat completion), ``invalid`` (an answer that failed validation twice).
    """

    code = "extraction_unavailable"

    def __init__(self, message: str, *, reason: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.http_status = http_status
