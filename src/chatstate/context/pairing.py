"""Tool calls and their results stay paired in a branch's log. Pure.

A model call whose history holds a tool call without its result, or a result without its
call, is refused by every provider, so one broken pair saved in the log would fail every
later turn of the session. :func:`check_tool_pairing` is the rule, checked before an
append is written: a second result for one call, a chat message while a call is
unanswered, and a result for a call the conversation has moved past are refused with a
:class:`~chatstate.errors.ValidationError` (422) that names the call.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatstate.errors import ValidationError
from chatstate.model import Event, NewEvent

__all__ = ["check_tool_pairing", "needs_pairing_window"]


def needs_pairing_window(events: Sequence[NewEvent]) -> bool:
    """Whether ``events`` hold a tool result whose call is not among them: only then can
    the append break a pair that the newest events of the log would show."""
    asked = {c.id for e in events for c in e.tool_calls}
    return any(e.kind == "tool_result" and e.tool_call_id not in asked for e in events)


def check_tool_pairing(recent: Sequence[Event], events: Sequence[NewEvent]) -> None:
    """Refuse an append that would break tool call/result pairing (422 naming the call).

    ``recent`` is the branch's newest events, oldest first; ``events`` the new ones. A
    call is *open* from its ``tool_call`` event until its result; any other chat message
    closes the conversation's open calls: a user (or assistant) message while one is open
    is refused, and so is a result for a call that is answered or no longer open.
    """
    open_calls: list[str] = []
    answered: set[str] = set()
    closed: set[str] = set()
    for event in recent:
        if event.unreadable is None:
            _step(event.kind, event, open_calls, answered, closed, None)
    for index, new in enumerate(events):
        _step(new.kind, new, open_calls, answered, closed, index)


def _step(
    kind: str,
    event: Event | NewEvent,
    open_calls: list[str],
    answered: set[str],
    closed: set[str],
    index: int | None,
) -> None:
    """Advance the pairing state by one event; raise only for new events (``index``)."""
    where = f"events[{index}]"
    if kind == "tool_call":
        if open_calls and index is not None:
            raise ValidationError(
                f"{where}: tool call {open_calls[0]!r} is still unanswered; "
                "append its tool result first"
            )
        closed.update(open_calls)
        open_calls[:] = [c.id for c in event.tool_calls]
    elif kind == "tool_result":
        call = event.tool_call_id or ""
        if call in open_calls:
            open_calls.remove(call)
            answered.add(call)
            return
        if index is None:
            return
        if call in answered:
            raise ValidationError(f"{where}: tool call {call!r} already has a result")
        if call in closed:
            raise ValidationError(
                f"{where}: tool call {call!r} was left unanswered and the conversation "
                "moved on; its result is too late"
            )
        raise ValidationError(f"{where}: no tool call {call!r} in this conversation")
    elif kind == "message":
        if open_calls and index is not None:
            raise ValidationError(
                f"{where}: tool call {open_calls[0]!r} is unanswered; append its tool "
                "result before the next message"
            )
        closed.update(open_calls)
        open_calls.clear()
