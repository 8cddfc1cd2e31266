"""Group events into atomic turns and repair what would brick a provider call. Pure.

A *turn* starts at a user message and runs to the next one: the user's message, the
assistant's replies, tool calls and their results. The context engine keeps or drops
whole turns, so a tool call is never separated from its result.

Repairs (each reported as an :class:`Exclusion`, never silent):

* a ``tool_call`` event whose calls do not all have a result in the same turn is left
  out together with the results it does have (providers reject an unanswered call);
* a ``tool_result`` with no matching call before it in its turn is left out;
* an event over ``max_event_tokens`` is left out (one huge paste or tool output must not
  make every later request fail);
* a stored event this code cannot read (:attr:`Event.unreadable`) is left out with its
  reason (``unreadable``, ``unknown kind``, ``unknown role``);
* ``state``, ``summary`` and ``marker`` events are not chat messages and are skipped
  without being reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatstate.context.text import event_text
from chatstate.context.tokens import MESSAGE_OVERHEAD
from chatstate.model import Event

__all__ = ["Exclusion", "Turn", "group_turns", "message_tokens", "partial_note"]

_CHAT_KINDS = frozenset({"message", "tool_call", "tool_result"})


@dataclass(frozen=True, slots=True)
class Turn:
    events: tuple[Event, ...]
    tokens: int
    """Tokens of the turn's messages, overheads included."""

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq

    @property
    def seqs(self) -> tuple[int, ...]:
        return tuple(e.seq for e in self.events)

    def text(self) -> str:
        return "\n".join(f"{e.role}: {event_text(e)}" for e in self.events)


@dataclass(frozen=True, slots=True)
class Exclusion:
    seq: int
    reason: str


_PARTIAL = frozenset({"cancelled", "incomplete", "error"})


def partial_note(event: Event) -> str:
    """The note sent after an answer that was cut off (stopped, or its producer died), so
    the model does not take it for a complete reply; ``""`` for a complete one.

    The gateway marks such answers with ``data["chatstate"]["status"]``.
    """
    meta = event.data.get("chatstate")
    status = meta.get("status") if isinstance(meta, dict) else None
    if event.role != "assistant" or status not in _PARTIAL:
        return ""
    return f"\n\n[This reply was cut off before it finished ({status}).]"


def message_tokens(event: Event, count: Callable[[str], int], *, stored: bool = True) -> int:
    """Tokens one event costs as a chat message: its stored count if any (and ``stored``),
    else counted; plus the partial-answer note when there is one."""
    if stored and event.token_count is not None:
        body = event.token_count
    else:
        body = count(event_text(event))
    note = partial_note(event)
    if note:
        body += count(note)
    return body + MESSAGE_OVERHEAD + (1 if event.name else 0)


def group_turns(
    events: Sequence[Event],
    *,
    count: Callable[[str], int],
    max_event_tokens: int,
    stored: bool = True,
) -> tuple[list[Turn], list[Exclusion]]:
    """Split chat events (oldest first) into turns, repairing as the module says."""
    turns: list[Turn] = []
    excluded: list[Exclusion] = []
    current: list[Event] = []

    def close() -> None:
        kept = _repair_tool_pairs(current, excluded)
        if kept:
            cost = sum(message_tokens(e, count, stored=stored) for e in kept)
            turns.append(Turn(tuple(kept), cost))
        current.clear()

    for event in events:
        if event.unreadable is not None:
            excluded.append(Exclusion(event.seq, event.unreadable))
            continue
        if event.kind not in _CHAT_KINDS:
            continue
        if message_tokens(event, count, stored=stored) > max_event_tokens:
            excluded.append(Exclusion(event.seq, "oversized"))
            continue
        if event.kind == "message" and event.role == "user" and current:
            close()
        current.append(event)
    if current:
        close()
    return turns, excluded


def _repair_tool_pairs(events: list[Event], excluded: list[Exclusion]) -> list[Event]:
    answered = {e.tool_call_id for e in events if e.kind == "tool_result"}
    dropped_calls: set[str] = set()
    kept: list[Event] = []
    asked: set[str] = set()
    for event in events:
        if event.kind == "tool_call":
            ids = {c.id for c in event.tool_calls}
            if not ids <= answered:
                excluded.append(Exclusion(event.seq, "tool call without a result"))
                dropped_calls |= ids
                continue
            asked |= ids
        elif event.kind == "tool_result":
            if event.tool_call_id in dropped_calls:
                excluded.append(Exclusion(event.seq, "result of an excluded tool call"))
                continue
            if event.tool_call_id not in asked:
                excluded.append(Exclusion(event.seq, "tool result without its call"))
                continue
        kept.append(event)
    return kept
