"""The fold: ``apply(doc, change) -> doc`` and ``rebuild_state(events) -> doc``. Pure.

The state document is a pure function of the ``state`` events in the log: replaying them
with :func:`rebuild_state` gives the document the :class:`~chatstate.state.service.StateKeeper`
wrote. Applying a change twice is the same as applying it once (a fact set to the value
it has, a commitment id that exists, a question already asked), so two writers that race
on one turn cannot corrupt the document.

Rules:

* ``set_fact`` to a new value moves the old one into the fact's ``history`` (reason
  ``update``); to the value it has, it only moves ``last_seq`` (stated again).
  ``correct_fact`` does the same with reason ``correction`` (and, for a fact never seen,
  records the ``previous`` value the speaker said was wrong). The history keeps the
  newest :data:`MAX_HISTORY` entries. ``delete_fact`` forgets a fact entirely.
* ``add_commitment`` adds one (id ``c<seq>``, or ``c<seq>-<n>`` for later ones from the
  same event), unless an entry with that id or the same text and topic is in force.
* ``set_commitment`` changes a commitment's status (and, with a value, its text: the
  sentence that fulfilled it); unknown ids are ignored.
* Open questions keep the newest :data:`MAX_QUESTIONS`; facts the :data:`MAX_FACTS` most
  recently stated (pinned ones always), so the document stays far below the store's
  size limit however long the session.
* **What was said never undoes a later write.** A change carries the seq it describes
  (the message it was extracted from; an API change, its own ``state`` event). Folded
  after a write with a higher seq, it is dropped: a fact whose current value came later,
  a fact deleted later (``_forgotten`` keeps the delete's seq per key), a commitment
  deleted later, anything older than the newest ``replace`` (``_replaced_at``). So the
  state keeper extracting old messages after an API correction, delete or ``PUT /state``
  (it runs behind the log) cannot bring back what the write removed, and the order the
  changes reach the log in does not matter.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from chatstate.errors import ValidationError
from chatstate.model import Event, JSONValue
from chatstate.state.changes import STATE_SCHEMA_VERSION, Change, normalise_value

__all__ = [
    "MAX_FACTS",
    "MAX_HISTORY",
    "MAX_QUESTIONS",
    "apply",
    "apply_all",
    "apply_in_place",
    "change_of",
    "empty_state",
    "rebuild_state",
    "user_document",
]

MAX_HISTORY = 10
MAX_QUESTIONS = 10
MAX_COMMITMENTS = 200
MAX_FACTS = 200

Doc = dict[str, JSONValue]
_T = TypeVar("_T", dict[str, JSONValue], list[JSONValue])


def empty_state() -> Doc:
    return {"schema": STATE_SCHEMA_VERSION, "facts": {}, "commitments": [], "open_questions": []}


def _fresh(doc: Mapping[str, JSONValue]) -> Doc:
    out: Doc = copy.deepcopy(dict(doc)) if doc else empty_state()
    out.setdefault("schema", STATE_SCHEMA_VERSION)
    for name, default in (("facts", {}), ("commitments", []), ("open_questions", [])):
        if not isinstance(out.get(name), type(default)):
            out[name] = default
    return out


def user_document(data: Mapping[str, JSONValue]) -> Doc:
    """``data`` without the keeper's ``_``-prefixed bookkeeping (its cursors and health),
    which a user's write never sets."""
    return {k: copy.deepcopy(v) for k, v in data.items() if not k.startswith("_")}


def apply(doc: Mapping[str, JSONValue], change: Change) -> Doc:
    """A new document: ``doc`` with ``change`` applied (``doc`` is not modified)."""
    out = _fresh(doc)
    _apply(out, change)
    return out


def _part(out: Doc, name: str, kind: type[_T]) -> _T:
    value = out.get(name)
    if not isinstance(value, kind):
        value = kind()
        out[name] = value
    return value


def _apply(out: Doc, change: Change) -> None:
    """Apply ``change`` to ``out`` in place."""
    if change.op == "replace":  # the user's whole document; the keeper's bookkeeping stays
        kept = {k: v for k, v in out.items() if k.startswith("_")}
        out.clear()
        out.update(_fresh(user_document(change.document or {})))
        out.update(kept)
        if change.seq is not None:
            out["_replaced_at"] = max(change.seq, _int(out.get("_replaced_at")))
        return
    if _said_before_a_write(out, change):
        return
    facts = _part(out, "facts", dict)
    commitments = _part(out, "commitments", list)
    questions = _part(out, "open_questions", list)
    op = change.op
    if op in ("set_fact", "correct_fact"):
        _set_fact(facts, change)
    elif op == "delete_fact":
        facts.pop(str(change.key), None)
        _forget(out, f"fact:{change.key}", change.seq)
    elif op == "pin_fact":
        entry = facts.get(str(change.key))
        if isinstance(entry, dict):
            entry["pinned"] = change.pinned is not False
    elif op == "add_commitment":
        _add_commitment(commitments, change)
    elif op == "set_commitment":
        for entry in commitments:
            if isinstance(entry, dict) and entry.get("id") == change.key:
                entry["status"] = change.status
                entry["status_seq"] = change.seq
                if change.value:
                    entry["text"] = change.value.strip()
    elif op == "delete_commitment":
        _forget(out, f"commitment:{change.key}", change.seq)
        out["commitments"] = [
            c for c in commitments if not (isinstance(c, dict) and c.get("id") == change.key)
        ]
    elif op == "set_goal":
        out["goal"] = change.value.strip() if change.value else None
        out["goal_seq"] = change.seq
    elif op == "add_question":
        qid = change.key or f"q{change.seq}"
        if not any(isinstance(q, dict) and q.get("id") == qid for q in questions):
            questions.append({"id": qid, "text": str(change.value).strip(), "seq": change.seq})
            del questions[:-MAX_QUESTIONS]
    elif op == "resolve_question":
        out["open_questions"] = [
            q for q in questions if not (isinstance(q, dict) and q.get("id") == change.key)
        ]


def _int(value: JSONValue) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _said_before_a_write(out: Doc, change: Change) -> bool:
    """Whether ``change`` describes the conversation before a later write it must not
    undo (see the module docstring)."""
    said = change.seq
    if said is None:
        return False
    if said < _int(out.get("_replaced_at")):
        return True
    forgotten = out.get("_forgotten")
    if change.op in ("set_fact", "correct_fact"):
        entry = _part(out, "facts", dict).get(str(change.key))
        if isinstance(entry, dict) and said < _int(entry.get("seq")):
            return True
        name = f"fact:{change.key}"
    elif change.op == "add_commitment":
        name = f"commitment:{change.key or f'c{said}'}"
    else:
        return False
    return isinstance(forgotten, dict) and said < _int(forgotten.get(name))


def _forget(out: Doc, name: str, seq: int | None) -> None:
    """Remember the seq of a delete (the newest :data:`MAX_FACTS` of them)."""
    if seq is None:
        return
    forgotten = out.get("_forgotten")
    kept = dict(forgotten) if isinstance(forgotten, dict) else {}
    newest = max(seq, _int(kept.pop(name, None)))
    kept[name] = newest  # moved to the end: the newest deletes are the ones kept
    out["_forgotten"] = dict(list(kept.items())[-MAX_FACTS:])


def _set_fact(facts: dict[str, JSONValue], change: Change) -> None:
    key, value = str(change.key), str(change.value).strip()
    entry = facts.get(key)
    reason = "correction" if change.op == "correct_fact" else "update"
    history: list[JSONValue] = []
    pinned = bool(change.pinned)
    if isinstance(entry, dict):
        old = entry.get("value")
        if isinstance(old, str) and normalise_value(old) == normalise_value(value):
            if change.pinned is not None:
                entry["pinned"] = change.pinned
            last = entry.get("last_seq")
            if change.seq is not None and (not isinstance(last, int) or change.seq > last):
                entry["last_seq"] = change.seq  # stated again: still current
            return  # the same value again: no history to record
        kept = entry.get("history")
        history = list(kept) if isinstance(kept, list) else []
        if isinstance(old, str):
            history.append(
                {
                    "value": old,
                    "seq": entry.get("seq"),
                    "at": entry.get("at"),
                    "replaced_seq": change.seq,
                    "reason": reason,
                }
            )
        pinned = entry.get("pinned") is True if change.pinned is None else change.pinned
    elif change.previous and normalise_value(change.previous) != normalise_value(value):
        history.append(
            {
                "value": change.previous,
                "seq": change.seq,
                "at": change.at,
                "replaced_seq": change.seq,
                "reason": reason,
            }
        )
    facts[key] = {
        "value": value,
        "seq": change.seq,
        "last_seq": change.seq,
        "at": change.at,
        "confidence": change.confidence,
        "source": change.source,
        "role": change.role,
        "pinned": pinned,
        "history": history[-MAX_HISTORY:],
    }
    if len(facts) > MAX_FACTS:  # forget the least recently stated fact that is not pinned
        stale = [
            (_last_seq(e), k)
            for k, e in facts.items()
            if isinstance(e, dict) and e.get("pinned") is not True and k != key
        ]
        if stale:
            facts.pop(min(stale)[1])


def _last_seq(entry: dict[str, JSONValue]) -> int:
    for name in ("last_seq", "seq"):
        value = entry.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _add_commitment(commitments: list[JSONValue], change: Change) -> None:
    text = str(change.value).strip()
    cid = change.key or f"c{change.seq}"
    same = normalise_value(text)
    for entry in commitments:
        if not isinstance(entry, dict):
            continue
        if entry.get("id") == cid:
            return
        in_force = entry.get("status") != "revoked"
        if in_force and entry.get("topic") == change.topic:
            old = entry.get("text")
            if isinstance(old, str) and normalise_value(old) == same:
                return
    commitments.append(
        {
            "id": cid,
            "text": text,
            "topic": change.topic,
            "status": change.status or "active",
            "seq": change.seq,
            "at": change.at,
            "source": change.source,
            "role": change.role,
        }
    )
    if len(commitments) > MAX_COMMITMENTS:  # drop the oldest that is no longer in force
        for index, entry in enumerate(commitments):
            if isinstance(entry, dict) and entry.get("status") != "active":
                del commitments[index]
                break
        else:
            del commitments[0]


def apply_in_place(doc: Doc, changes: Iterable[Change]) -> None:
    """Apply ``changes`` to ``doc`` itself (a document from :func:`empty_state` or one of
    this module's functions): for loops that fold many changes into a private copy."""
    for change in changes:
        _apply(doc, change)


def apply_all(doc: Mapping[str, JSONValue], changes: Iterable[Change]) -> Doc:
    out = _fresh(doc)
    for change in changes:
        _apply(out, change)
    return out


def change_of(event: Event) -> Change | None:
    """The change a ``state`` event records, or ``None`` for other events and for state
    events that are not changes (another writer's payload)."""
    if event.kind != "state":
        return None
    try:
        change = Change.from_data(event.data, seq=event.seq)
    except ValidationError:
        return None
    if change.at is None:
        change = replace(change, at=event.created_at.isoformat())
    return change


def rebuild_state(events: Iterable[Event], doc: Mapping[str, JSONValue] | None = None) -> Doc:
    """Replay the ``state`` events among ``events`` (oldest first) onto ``doc`` (default:
    an empty document); ``_upto`` becomes the newest seq seen."""
    out = _fresh(doc or {})
    for event in events:
        change = change_of(event)
        if change is not None:
            _apply(out, change)
        upto = out.get("_upto")
        if not isinstance(upto, int) or event.seq > upto:
            out["_upto"] = event.seq
    return out
