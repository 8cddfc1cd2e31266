"""Render the session state document as the pinned section of the context. Pure.

Understands the keys the state layer writes (:mod:`chatstate.state`) and ignores the rest
(and any key starting with ``_``, which is private to chatstate):

* ``goal``: the user's current goal (text);
* ``facts``: ``{name: value}`` or ``{name: {"value": ..., "pinned": ..., ...}}``; current
  values only (a fact's ``history`` of superseded values is never rendered);
* ``commitments``: a list of ``{"text": ..., "status": ..., "topic": ...}``: ``active``
  ones as commitments made to the user, ``fulfilled`` ones as done, and those with topic
  ``constraint`` as constraints the user set; ``revoked`` ones not at all;
* ``open_questions``: a list of texts, or of ``{"text": ...}``.

Order is fixed and keys are sorted so the rendering (and with it the prompt prefix) only
changes when the state does. Pinned facts come first: when the state section is cut to
its share of the budget, lines are dropped from the end, so open questions go first and
pinned facts last.
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


def _pinned(entry: JSONValue) -> bool:
    return isinstance(entry, dict) and entry.get("pinned") is True


def _commitments(commitments: JSONValue) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"active": [], "fulfilled": [], "constraint": []}
    for c in commitments if isinstance(commitments, list) else []:
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            continue
        status = c.get("status", "active")
        if c.get("topic") == "constraint" and status == "active":
            groups["constraint"].append(str(c["text"]))
        elif status in ("active", "fulfilled"):
            groups[str(status)].append(str(c["text"]))
    return groups


def render_state(data: Mapping[str, JSONValue]) -> str:
    """Compact text for the pinned section; ``""`` when there is nothing to pin."""
    lines: list[str] = []
    goal = data.get("goal")
    if isinstance(goal, str) and goal:
        lines.append(f"Goal: {goal}")
    facts = data.get("facts")
    if isinstance(facts, dict) and facts:
        ordered = sorted(facts.items(), key=lambda item: (not _pinned(item[1]), item[0]))
        lines.append("Facts:")
        lines += [f"- {name}: {_value(entry)}" for name, entry in ordered]
    groups = _commitments(data.get("commitments"))
    for status, heading in (
        ("constraint", "Constraints the user set:"),
        ("active", "Commitments made to the user:"),
        ("fulfilled", "Already done for the user:"),
    ):
        if groups[status]:
            lines.append(heading)
            lines += [f"- {text}" for text in groups[status]]
    questions = data.get("open_questions")
    if isinstance(questions, list):
        texts = [
            q if isinstance(q, str) else q.get("text")
            for q in questions
            if isinstance(q, str | dict)
        ]
        shown = [t for t in texts if isinstance(t, str) and t]
        if shown:
            lines.append("Open questions:")
            lines += [f"- {q}" for q in shown]
    return "\n".join(lines)
