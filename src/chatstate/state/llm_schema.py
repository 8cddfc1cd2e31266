"""The JSON schema the LLM extractor asks for, and the validation of its answers. Pure.

The model answers one JSON object (``response_format`` ``json_schema``, strict)::

    {"facts": [{"key": "order_number", "value": "NW-48231", "seq": 6,
                "correction": true, "confidence": 0.9}],
     "commitments": [{"text": "I've issued a full refund of €149", "topic": "refund",
                      "status": "fulfilled", "seq": 13}],
     "commitment_updates": [{"id": "c11", "status": "fulfilled", "seq": 13}],
     "goal": "get a refund for damaged boots",
     "open_questions": [{"text": "When will the money arrive?", "seq": 14}],
     "resolved_questions": ["q9"]}

:func:`parse_answer` checks every field (types, a ``seq`` that names one of the messages
sent, ids that exist, sizes) and raises :class:`InvalidAnswer` with the first problem;
the extractor retries once, quoting the problem back to the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from chatstate.errors import ValidationError
from chatstate.model import Event, JSONValue
from chatstate.state.changes import (
    MAX_TEXT,
    Change,
    CommitmentStatus,
    Op,
    commitments_of,
    fact_key,
)

__all__ = ["ANSWER_SCHEMA", "InvalidAnswer", "parse_answer"]

_SEQ: dict[str, JSONValue] = {"type": "integer"}
_TEXT: dict[str, JSONValue] = {"type": "string"}
ANSWER_SCHEMA: dict[str, JSONValue] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "facts",
        "commitments",
        "commitment_updates",
        "goal",
        "open_questions",
        "resolved_questions",
    ],
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "value", "seq", "correction", "confidence"],
                "properties": {
                    "key": _TEXT,
                    "value": _TEXT,
                    "seq": _SEQ,
                    "correction": {"type": "boolean"},
                    "confidence": {"type": "number"},
                },
            },
        },
        "commitments": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "topic", "status", "seq"],
                "properties": {
                    "text": _TEXT,
                    "topic": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": ["active", "fulfilled"]},
                    "seq": _SEQ,
                },
            },
        },
        "commitment_updates": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "status", "seq"],
                "properties": {
                    "id": _TEXT,
                    "status": {"type": "string", "enum": ["active", "fulfilled", "revoked"]},
                    "seq": _SEQ,
                },
            },
        },
        "goal": {"type": ["string", "null"]},
        "open_questions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "seq"],
                "properties": {"text": _TEXT, "seq": _SEQ},
            },
        },
        "resolved_questions": {"type": "array", "items": _TEXT},
    },
}


class InvalidAnswer(ValueError):
    """The model's answer is not valid JSON of :data:`ANSWER_SCHEMA`."""


def _items(answer: Mapping[str, JSONValue], name: str) -> list[dict[str, JSONValue]]:
    value = answer.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidAnswer(f"{name} must be a list of objects")
    return [v for v in value if isinstance(v, dict)]


def _text(item: Mapping[str, JSONValue], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidAnswer(f"{where}.{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidAnswer(f"{where}.{name} is longer than {MAX_TEXT} characters")
    return value.strip()


_Where = tuple[int, str, str | None]
_STATUS: dict[str, CommitmentStatus] = {
    "active": "active",
    "fulfilled": "fulfilled",
    "revoked": "revoked",
}


class _Reader:
    """Turns one validated answer into changes; every ``seq`` must name a sent message."""

    def __init__(self, events: Sequence[Event], state: Mapping[str, JSONValue]) -> None:
        self.sent = {e.seq: e for e in events}
        self.last = max(self.sent)
        self.state = state
        self.made: dict[int, int] = {}

    def where(self, item: Mapping[str, JSONValue], where: str) -> _Where:
        seq = item.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq not in self.sent:
            raise InvalidAnswer(f"{where}.seq must be the number of one of the messages sent")
        event = self.sent[seq]
        return seq, event.created_at.isoformat(), event.role

    def facts(self, answer: Mapping[str, JSONValue]) -> list[Change]:
        out: list[Change] = []
        for i, item in enumerate(_items(answer, "facts")):
            where = f"facts[{i}]"
            seq, at, role = self.where(item, where)
            confidence = item.get("confidence", 0.8)
            if isinstance(confidence, bool) or not isinstance(confidence, int | float):
                raise InvalidAnswer(f"{where}.confidence must be a number")
            op: Op = "correct_fact" if item.get("correction") is True else "set_fact"
            key, value = fact_key(_text(item, "key", where)), _text(item, "value", where)
            conf = min(1.0, max(0.0, float(confidence)))
            out.append(
                Change(
                    op,
                    key=key,
                    value=value,
                    seq=seq,
                    at=at,
                    source="llm",
                    role=role,
                    confidence=conf,
                )
            )
        return out

    def updates(self, answer: Mapping[str, JSONValue]) -> list[Change]:
        known = {c.id for c in commitments_of(self.state)}
        out: list[Change] = []
        for i, item in enumerate(_items(answer, "commitment_updates")):
            where = f"commitment_updates[{i}]"
            seq, at, role = self.where(item, where)
            cid, status = item.get("id"), _STATUS.get(str(item.get("status")))
            if not isinstance(cid, str) or cid not in known or status is None:
                raise InvalidAnswer(f"{where} names an unknown commitment or status")
            out.append(
                Change(
                    "set_commitment",
                    key=cid,
                    status=status,
                    seq=seq,
                    at=at,
                    source="llm",
                    role=role,
                )
            )
        return out

    def commitments(self, answer: Mapping[str, JSONValue]) -> list[Change]:
        out: list[Change] = []
        for i, item in enumerate(_items(answer, "commitments")):
            where = f"commitments[{i}]"
            seq, at, role = self.where(item, where)
            status, topic = _STATUS.get(str(item.get("status"))), item.get("topic")
            if status not in ("active", "fulfilled") or not isinstance(topic, str | None):
                raise InvalidAnswer(f"{where} needs status active or fulfilled, topic text")
            self.made[seq] = self.made.get(seq, 0) + 1
            cid = f"c{seq}" if self.made[seq] == 1 else f"c{seq}-{self.made[seq]}"
            text = _text(item, "text", where)
            out.append(
                Change(
                    "add_commitment",
                    key=cid,
                    value=text,
                    topic=topic,
                    status=status,
                    seq=seq,
                    at=at,
                    source="llm",
                    role=role,
                )
            )
        return out

    def questions(self, answer: Mapping[str, JSONValue]) -> list[Change]:
        out: list[Change] = []
        at_last = self.sent[self.last].created_at.isoformat()
        goal = answer.get("goal")
        if goal is not None:
            if not isinstance(goal, str) or len(goal) > MAX_TEXT:
                raise InvalidAnswer("goal must be a string or null")
            if goal.strip() and goal.strip() != self.state.get("goal"):
                out.append(
                    Change("set_goal", value=goal.strip(), seq=self.last, at=at_last, source="llm")
                )
        for i, item in enumerate(_items(answer, "open_questions")):
            seq, at, role = self.where(item, f"open_questions[{i}]")
            text = _text(item, "text", f"open_questions[{i}]")
            out.append(
                Change(
                    "add_question",
                    key=f"q{seq}",
                    value=text,
                    seq=seq,
                    at=at,
                    source="llm",
                    role=role,
                )
            )
        resolved = answer.get("resolved_questions", [])
        if not isinstance(resolved, list) or not all(isinstance(q, str) for q in resolved):
            raise InvalidAnswer("resolved_questions must be a list of question ids")
        out += [
            Change("resolve_question", key=str(q), seq=self.last, at=at_last, source="llm")
            for q in resolved
        ]
        return out


def parse_answer(
    raw: str, *, events: Sequence[Event], state: Mapping[str, JSONValue]
) -> list[Change]:
    """The changes a model's answer describes, validated against ``events`` and ``state``."""
    text = raw.strip()
    if text.startswith("```"):  # some servers wrap JSON in a code fence despite the schema
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise InvalidAnswer(f"not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise InvalidAnswer("the answer must be a JSON object")
    if not events:
        return []
    reader = _Reader(events, state)
    try:
        return [
            *reader.facts(answer),
            *reader.updates(answer),
            *reader.commitments(answer),
            *reader.questions(answer),
        ]
    except ValidationError as exc:  # a Change refused a value (an empty key, say)
        raise InvalidAnswer(exc.message) from exc
