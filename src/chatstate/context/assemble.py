"""Budgeted assembly of one turn's input. Pure: values in, values out, no I/O.

Order of the output (stable, so a provider's prompt cache stays warm):

1. the system prompt;
2. the pinned session state (facts, commitments), as one system message;
3. the rolling summary of older turns, as one system message;
4. older turns relevant to the current message (retrieved), as one system message;
5. the most recent turns, verbatim, as chat messages;
6. the current message.

1-3 are the *prefix*: they change only when the state changes or a new summary exists.
Sections 2-4 each have a share of the budget; what they leave unused flows to the recent
window. Turns are kept whole, newest first. The budget is never exceeded: when the system
prompt and the current message alone do not fit, :class:`TooLarge` is raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatstate.context.manifest import Manifest, RetrievedTurn, SummaryUse
from chatstate.context.text import event_text
from chatstate.context.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from chatstate.context.turns import Turn, group_turns, partial_note
from chatstate.errors import TooLarge, ValidationError
from chatstate.model import Event, JSONValue, NewEvent
from chatstate.openai_format import to_openai

__all__ = ["AssembledContext", "ContextPolicy", "ContextRequest", "SummaryInput", "assemble"]

Message = dict[str, JSONValue]


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """How the budget is shared. Shares are fractions of the whole budget."""

    state_share: float = 0.15
    summary_share: float = 0.15
    retrieved_share: float = 0.25
    max_event_share: float = 0.5
    """An event larger than this share of the budget is excluded as oversized."""
    retrieve_k: int = 8
    """Excerpts at most within the retrieved share (three times as many when every recent
    turn fits and the rest of the budget is free)."""

    def __post_init__(self) -> None:
        shares = (self.state_share, self.summary_share, self.retrieved_share)
        if any(s < 0 for s in shares) or sum(shares) > 0.9:
            raise ValidationError("section shares must be >= 0 and leave 10% for recent turns")
        if not 0 < self.max_event_share <= 1:
            raise ValidationError("max_event_share must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class SummaryInput:
    seq: int
    from_seq: int
    to_seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ContextRequest:
    model: str
    budget: int
    """Input tokens allowed: the model's window minus the reply's reservation."""
    tail: Sequence[Event]
    """Events after the summary (or all, without one), oldest first."""
    system: str | None = None
    pinned: str = ""
    summary: SummaryInput | None = None
    candidates: Sequence[tuple[Turn, float]] = ()
    """Retrieved older turns, best first, with their scores."""
    current: NewEvent | None = None
    previous_prefix: tuple[str, ...] = ()
    uncovered_before: int | None = None
    stored_counts: bool = True
    """Use events' stored ``token_count``; false when they were counted with another
    tokenizer than this model's."""


@dataclass(frozen=True, slots=True)
class AssembledContext:
    messages: list[Message]
    manifest: Manifest
    overflow: tuple[Turn, ...]
    """Tail turns that did not fit, oldest first: what the next summary should fold in."""


def _system(text: str) -> Message:
    return {"role": "system", "content": text}


def _fit_lines(text: str, cap: int, count: Callable[[str], int]) -> tuple[str, bool]:
    """``text`` cut at line ends so that it costs at most ``cap`` tokens as a message.

    The longest fitting prefix of lines is found by binary search: a few counts, not
    one per line (a long summary has hundreds of lines).
    """
    if count(text) + MESSAGE_OVERHEAD <= cap:
        return text, False
    lines = text.splitlines()
    lo, hi = 0, len(lines)  # lines[:lo] fits; lines[:hi + 1] does not
    hi -= 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count("\n".join(lines[:mid])) + MESSAGE_OVERHEAD <= cap:
            lo = mid
        else:
            hi = mid - 1
    return "\n".join(lines[:lo]), True


def _digest(message: Message) -> str:
    return hashlib.sha256(repr(sorted(message.items())).encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Draft:
    """The sections as they are being filled."""

    budget: int
    left: int
    sections: dict[str, int]
    head: list[Message]
    state_truncated: bool = False
    summary: SummaryUse | None = None


def assemble(
    request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> AssembledContext:
    """Build the messages for one model call and the manifest that explains them."""
    draft = _mandatory(request, count)
    current = (
        [to_openai(request.current, include_extra=False)] if request.current is not None else []
    )
    _pin_state(draft, request, policy, count)
    _pin_summary(draft, request, policy, count)
    max_event = max(1, int(policy.max_event_share * draft.budget))
    turns, excluded = group_turns(
        request.tail, count=count, max_event_tokens=max_event, stored=request.stored_counts
    )
    recent, picked, spent = _fill(
        draft.left,
        turns,
        request.candidates,
        policy,
        count,
        int(policy.retrieved_share * draft.budget),
    )

    body: list[Message] = []
    if picked:
        text = _excerpts(picked)
        body.append(_system(text))
        draft.sections["retrieved"] = count(text) + MESSAGE_OVERHEAD
    for turn in recent:
        body += [_chat_message(e) for e in turn.events]
    draft.sections["recent"] = spent

    verbatim = tuple(e.seq for t in recent for e in t.events)
    shown = set(verbatim) | {e.seq for t, _ in picked for e in t.events}
    covered_to = draft.summary.to_seq if draft.summary is not None else 0
    dropped = tuple(
        e.seq for t in turns for e in t.events if e.seq not in shown and e.seq > covered_to
    )
    prefix_costs = [draft.sections[k] for k in ("system", "state", "summary") if draft.sections[k]]
    prefix_hashes = tuple(_digest(m) for m in draft.head)
    stable = 0
    for mine, theirs, cost in zip(
        prefix_hashes, request.previous_prefix, prefix_costs, strict=False
    ):
        if mine != theirs:
            break
        stable += cost
    manifest = Manifest(
        model=request.model,
        budget=draft.budget,
        used=sum(draft.sections.values()) + REPLY_OVERHEAD,
        sections=draft.sections,
        verbatim=verbatim,
        retrieved=tuple(RetrievedTurn(t.seqs, round(s, 4)) for t, s in picked),
        summary=draft.summary,
        dropped=dropped,
        excluded=tuple((x.seq, x.reason) for x in excluded),
        prefix_tokens=sum(prefix_costs),
        stable_prefix_tokens=stable,
        prefix_hashes=prefix_hashes,
        uncovered_before=request.uncovered_before,
        state_truncated=draft.state_truncated,
    )
    first_recent = recent[0].first_seq if recent else None
    overflow = tuple(t for t in turns if first_recent is None or t.last_seq < first_recent)
    return AssembledContext(draft.head + body + current, manifest, overflow)


def _mandatory(request: ContextRequest, count: Callable[[str], int]) -> _Draft:
    """System prompt and current message: what must fit, or the build fails."""
    budget = request.budget
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValidationError("budget must be a positive number of tokens")
    sections = dict.fromkeys(("system", "state", "summary", "retrieved", "recent", "current"), 0)
    head: list[Message] = []
    if request.system:
        head.append(_system(request.system))
        sections["system"] = count(request.system) + MESSAGE_OVERHEAD
    if request.current is not None:
        sections["current"] = count(event_text(request.current)) + MESSAGE_OVERHEAD
    left = budget - REPLY_OVERHEAD - sections["system"] - sections["current"]
    if left < 0:
        raise TooLarge(
            f"the system prompt and the current message need {budget - left} tokens; "
            f"the budget is {budget}"
        )
    return _Draft(budget=budget, left=left, sections=sections, head=head)


def _pin_state(
    draft: _Draft, request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> None:
    if not request.pinned:
        return
    cap = min(draft.left, int(policy.state_share * draft.budget))
    text, draft.state_truncated = _fit_lines("Session state:\n" + request.pinned, cap, count)
    if text:
        draft.head.append(_system(text))
        draft.sections["state"] = count(text) + MESSAGE_OVERHEAD
        draft.left -= draft.sections["state"]


def _pin_summary(
    draft: _Draft, request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> None:
    s = request.summary
    if s is None:
        return
    cap = min(draft.left, int(policy.summary_share * draft.budget))
    label = f"Summary of the conversation up to message {s.to_seq}:\n"
    text, cut = _fit_lines(label + s.text, cap, count)
    if text:
        draft.head.append(_system(text))
        draft.sections["summary"] = count(text) + MESSAGE_OVERHEAD
        draft.left -= draft.sections["summary"]
        draft.summary = SummaryUse(s.seq, s.from_seq, s.to_seq, cut)


def _fill(
    left: int,
    turns: list[Turn],
    candidates: Sequence[tuple[Turn, float]],
    policy: ContextPolicy,
    count: Callable[[str], int],
    retrieved_share: int,
) -> tuple[list[Turn], list[tuple[Turn, float]], int]:
    """Recent turns newest first, retrieved turns in their share, the rest to recent."""
    retrieved_cap = min(left, retrieved_share)
    recent: list[Turn] = []
    spent = 0
    index = len(turns) - 1
    while index >= 0 and spent + turns[index].tokens <= left - retrieved_cap:
        spent += turns[index].tokens
        recent.append(turns[index])
        index -= 1
    oldest_recent = recent[-1].first_seq if recent else None

    # Retrieved turns in their share; when every tail turn already fits, in all that is
    # left (an unused budget helps nobody), up to three times as many of them.
    room, limit = retrieved_cap, policy.retrieve_k
    if index < 0:
        room, limit = left - spent, 3 * policy.retrieve_k
    picked: list[tuple[Turn, float]] = []
    cost = _header_cost(count)
    for turn, score in candidates[:limit]:
        if oldest_recent is not None and turn.first_seq >= oldest_recent:
            continue
        extra = count(_excerpt(turn)) + 1
        if cost + extra <= room:
            picked.append((turn, score))
            cost += extra
    if not picked:
        cost = 0

    # What the retrieved share left unused flows to the recent window.
    while index >= 0 and spent + turns[index].tokens <= left - cost:
        turn = turns[index]
        spent += turn.tokens
        recent.append(turn)
        index -= 1
        if any(p[0].first_seq == turn.first_seq for p in picked):
            picked = [p for p in picked if p[0].first_seq != turn.first_seq]
            cost = _excerpt_cost(picked, count)
    recent.reverse()

    # Counting the joined text can differ from the sum of its parts: drop the weakest
    # excerpts until the real count fits (the budget is a hard limit).
    while picked and spent + count(_excerpts(picked)) + MESSAGE_OVERHEAD > left:
        picked.remove(min(picked, key=lambda p: (p[1], p[0].first_seq)))
    return recent, picked, spent


_HEADER = "Earlier messages relevant to the current one:"


def _header_cost(count: Callable[[str], int]) -> int:
    return count(_HEADER) + MESSAGE_OVERHEAD


def _chat_message(event: Event) -> Message:
    message = to_openai(event, include_extra=False)
    note = partial_note(event)
    if note:
        content = message.get("content")
        message["content"] = (content if isinstance(content, str) else "") + note
    return message


def _excerpts(picked: list[tuple[Turn, float]]) -> str:
    ordered = sorted(picked, key=lambda p: p[0].first_seq)
    return _HEADER + "\n" + "\n".join(_excerpt(t) for t, _ in ordered)


def _excerpt(turn: Turn) -> str:
    return "\n".join(f"[#{e.seq}] {e.role}: {event_text(e)}" for e in turn.events)


def _excerpt_cost(picked: list[tuple[Turn, float]], count: Callable[[str], int]) -> int:
    """An upper estimate of the retrieved section's tokens (checked exactly at the end)."""
    if not picked:
        return 0
    return _header_cost(count) + sum(count(_excerpt(t)) + 1 for t, _ in picked)
