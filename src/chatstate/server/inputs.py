"""Checks the API runs on what a caller sends, before any tokenizer, parser or write.

* :func:`check_events` validates a whole append the way the store will (text policy,
  kind/role shape, the size limits) so that a 1,000,000-character message is a 413 and a
  NUL a 422 before the token counter ever sees it, and a rejected gateway request can be
  refused before its session is created.
* :func:`check_message` does the same for a loose message (``/context``'s ``message`` and
  ``system``).
* :func:`check_tool_pairing` keeps tool calls and their results paired on write: a second
  result for one call, a chat message while a call is unanswered, and a result for a call
  the conversation has moved past are refused with a 422 that names the call.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatstate.errors import TooLarge, ValidationError
from chatstate.model import Event, NewEvent
from chatstate.store.codec import encode_appends
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreLimits, check_text

__all__ = [
    "check_events",
    "check_message",
    "check_messages",
    "check_tool_pairing",
    "limits_of",
]


def limits_of(store: Store) -> StoreLimits:
    """The store's size limits when it exposes them, else the defaults every backend uses."""
    for name in ("config", "_config"):
        limits = getattr(getattr(store, name, None), "limits", None)
        if isinstance(limits, StoreLimits):
            return limits
    return StoreLimits()


def check_events(events: Sequence[NewEvent], limits: StoreLimits) -> None:
    """Refuse what the store would refuse (422/413), without counting a token."""
    encode_appends(events, limits)


def check_messages(messages: Sequence[NewEvent], limits: StoreLimits) -> None:
    """Each message of a gateway request on its own (the request carries the history,
    which may be longer than one append may be), named ``messages[i]``."""
    for index, message in enumerate(messages):
        try:
            encode_appends([message], limits)
        except (ValidationError, TooLarge) as exc:
            text = exc.message.replace("events[0]", f"messages[{index}]", 1)
            raise type(exc)(text) from None


def check_message(text: str | None, field: str, limits: StoreLimits) -> None:
    """A loose message: the text policy and the one-event size limit."""
    if text is None:
        return
    # A character is at most 4 UTF-8 bytes: only long texts need the exact size.
    if len(text) > limits.max_event_bytes // 4 and (
        len(text) > limits.max_event_bytes
        or len(text.encode("utf-8", "surrogatepass")) > limits.max_event_bytes
    ):
        raise TooLarge(f"{field} is over {limits.max_event_bytes} bytes")
    check_text(text, field)


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
