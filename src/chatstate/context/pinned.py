"""Render the session state document as the pinned section of the context. Pure.

Understands the keys the state layer writes and ignores the rest (and any key starting
with ``_``, which is private to chatstate):

* ``goal``: the user's current goal (text);
* ``facts``: ``{name: value}`` or ``{name: {"value": ..., ...}}``; current values only;
* ``commitments``: a list of ``{"text": ..., "status": ...}``; only ``active`` ones;
* ``open_questions``: a list of texts.

Keys are sorted so the rendering (and with it the prompt prefix) only changes when the
state does.
"""

from __future__ import annotations

from collections.abc import Mapping

from chatstate.model import JSONValue

__all__ = ["render_state"]


def _value(entry: JSONValue) -> str:
    if isinstance(entry, dict) and "value" in entry:
        entry = entry["value"]
    return entry if isinstance(entry, str) else _compact(entry)


def _compact(value: JSONValue) -> str:
    if isinstance(value, list):
        return ", ".join(_compact(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def render_state(data: Mapping[str, JSONValue]) -> str:
    """Compact text for the pinned section; ``""`` when there is nothing to pin."""
    lines: list[str] = []
    goal = data.get("goal")
    if isinstance(goal, str) and goal:
        lines.append(f"Goal: {goal}")
    facts = data.get("facts")
    if isinstance(facts, dict) and facts:
        lines.append("Facts:")
        lines += [f"- {name}: {_value(entry)}" for name, entry in sorted(facts.items())]
    commitments = data.get("commitments")
    if isinstance(commitments, list):
        active = [
            c["text"]
            for c in commitments
            if isinstance(c, dict)
            and isinstance(c.get("text"), str)
            and c.get("status", "active") == "active"
        ]
        if active:
            lines.append("Commitments made to the user:")
            lines += [f"- {text}" for text in active]
    questions = data.get("open_questions")
    if isinstance(questions, list) and questions:
        lines.append("Open questions:")
        lines += [f"- {q}" for q in questions if isinstance(q, str)]
    return "\n".join(lines)
