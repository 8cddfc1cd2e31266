"""Checks the API runs on what a caller sends, before any tokenizer, parser or write.

* :func:`check_events` validates a whole append the way the store will (text policy,
  kind/role shape, the size limits) so that a 1,000,000-character message is a 413 and a
  NUL a 422 before the token counter ever sees it, and a rejected gateway request can be
  refused before its session is created.
* :func:`check_message` does the same for a loose message (``/context``'s ``message`` and
  ``system``).

Tool call/result pairing on write is :func:`chatstate.context.pairing.check_tool_pairing`,
run by :meth:`ContextEngine.append <chatstate.context.engine.ContextEngine.append>` on the
newest events a route has read.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatstate.errors import TooLarge, ValidationError
from chatstate.model import NewEvent
from chatstate.store.codec import encode_appends
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreLimits, check_text

__all__ = [
    "check_events",
    "check_message",
    "check_messages",
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
