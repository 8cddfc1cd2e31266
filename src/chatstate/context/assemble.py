"""Budgeted assembly of one turn's input. Pure: values in, values out, no I/O.

Order of the output (stable, so a provider's prompt cache stays warm):

1. the system prompt;
2. the pinned session state (facts, commitments), as one system message;
3. the rolling summary of older turns, as one system message;
4. older turns relevant to the current message (retrieved), as one system message;
5. the most recent turns, verbatim, as chat messages;
6. the current message.

1-3 are the *prefix*: they change when the state changes, a new summary exists, or the
message's intent changes what state and summary get (``stable_prefix_tokens`` says how
much stayed).
The budget follows what the message needs (:func:`intent_of`): for a follow-up the recent
window comes first and sections 2-4 each have a share; for a self-contained question
about the past, retrieval may take all but a floor for the newest turns, the state
shrinks, and the summary shrinks or, when the retrieved candidates alone fill that room,
gives way to them. What a section leaves unused flows to the recent window. Recent turns
are kept whole, newest first; retrieved messages are packed best first (a long one cut
to its sentences that share words with the message), then the messages around them,
shown in log order under their date when the conversation has dates. The manifest's
``reasons`` says why each section got what it got. The budget is never exceeded: when the system
prompt and the current message alone do not fit, :class:`TooLarge` is raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from chatstate.context.bm25 import tokenize
from chatstate.context.excerpts import (
    MAX_CUTS,
    MIN_LINE,
    Picked,
    cut,
    date_cost,
    excerpt_cost,
    excerpts,
    header_cost,
    line_cost,
    runs,
)
from chatstate.context.manifest import Manifest, SummaryUse
from chatstate.context.policy import PRESETS, ContextPolicy, Intent, intent_of, parse_policy
from chatstate.context.text import event_text
from chatstate.context.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from chatstate.context.turns import Turn, group_turns, partial_note
from chatstate.errors import TooLarge, ValidationError
from chatstate.model import Event, JSONValue, NewEvent
from chatstate.openai_format import to_openai

__all__ = [
    "PRESETS",
    "AssembledContext",
    "ContextPolicy",
    "ContextRequest",
    "SummaryInput",
    "assemble",
    "intent_of",
    "parse_policy",
]

Message = dict[str, JSONValue]


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
    """Retrieved older messages (or turns), best first, with their scores."""
    current: NewEvent | None = None
    previous_prefix: tuple[str, ...] = ()
    uncovered_before: int | None = None
    stored_counts: bool = True
    """Use events' stored ``token_count``; false when they were counted with another
    tokenizer than this model's."""
    neighbours: Mapping[int, tuple[Event, ...]] = field(default_factory=dict)
    """Per retrieved seq, the messages around it, sent when they fit after the hits."""
    dates: Mapping[int, str] = field(default_factory=dict)
    """The date of a retrieved message by seq (only when the conversation spans dates)."""
    line_tokens: Callable[[Event], int | None] | None = None
    """Tokens of a retrieved message's line (:func:`line`) when the caller keeps them
    (the engine's index counts each once); counted here without it or when it gives
    ``None``."""
    retrieval_note: str | None = None
    """Why the caller retrieved nothing, when it knows (the manifest's
    ``reasons["retrieved"]``)."""


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
    intent: Intent = "fixed"
    reasons: dict[str, str] = field(default_factory=dict)
    state_truncated: bool = False
    summary: SummaryUse | None = None


def assemble(
    request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> AssembledContext:
    """Build the messages for one model call and the manifest that explains them."""
    draft = _mandatory(request, policy, count)
    current = (
        [to_openai(request.current, include_extra=False)] if request.current is not None else []
    )
    if policy.adaptive:
        text = event_text(request.current) if request.current is not None else ""
        draft.intent, why = intent_of(text, retrieved=bool(request.candidates))
        draft.reasons["intent"] = f"{draft.intent}: {why}"
    _pin_state(draft, request, policy, count)
    _pin_summary(draft, request, policy, count)
    max_event = max(1, int(policy.max_event_share * draft.budget))
    turns, excluded = group_turns(
        request.tail, count=count, max_event_tokens=max_event, stored=request.stored_counts
    )
    recent, picked, spent, retrieved = _fill(draft, turns, request, policy, count)

    body: list[Message] = []
    if picked:
        body.append(_system(excerpts(picked, request.dates)))
        draft.sections["retrieved"] = retrieved
    for turn in recent:
        body += [_chat_message(e) for e in turn.events]
    draft.sections["recent"] = spent

    verbatim = tuple(e.seq for t in recent for e in t.events)
    shown = set(verbatim) | {e.seq for e, _ in picked}
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
        retrieved=runs(picked),
        summary=draft.summary,
        dropped=dropped,
        excluded=tuple((x.seq, x.reason) for x in excluded),
        prefix_tokens=sum(prefix_costs),
        stable_prefix_tokens=stable,
        prefix_hashes=prefix_hashes,
        uncovered_before=request.uncovered_before,
        state_truncated=draft.state_truncated,
        reasons=draft.reasons,
    )
    first_recent = recent[0].first_seq if recent else None
    overflow = tuple(t for t in turns if first_recent is None or t.last_seq < first_recent)
    return AssembledContext(draft.head + body + current, manifest, overflow)


def _mandatory(
    request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> _Draft:
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
    draft = _Draft(budget=budget, left=left, sections=sections, head=head)
    if policy.fill < 1:
        draft.left = max(0, left - int(budget * (1 - policy.fill)))
        draft.reasons["fill"] = f"at most {policy.fill:.0%} of the budget is used"
    return draft


def _pin_state(
    draft: _Draft, request: ContextRequest, policy: ContextPolicy, count: Callable[[str], int]
) -> None:
    if not request.pinned:
        return
    share = policy.state_share / (2 if draft.intent == "past" else 1)
    cap = min(draft.left, int(share * draft.budget))
    text, draft.state_truncated = _fit_lines("Session state:\n" + request.pinned, cap, count)
    if draft.intent == "past":
        draft.reasons["state"] = f"up to {cap} tokens: half its share, retrieval comes first"
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
    share = policy.summary_share / (3 if draft.intent == "past" else 1)
    cap = min(draft.left, int(share * draft.budget))
    if draft.intent == "past":
        offered = sum(turn.tokens for turn, _ in request.candidates)
        room = draft.left - int(policy.recent_min_share * draft.budget)
        if offered >= room:
            # Retrieval has more of the conversation's own turns than fit: they say what a
            # summary line would, with the words the question matched.
            draft.reasons["summary"] = (
                f"left out: {len(request.candidates)} retrieved candidates ({offered} "
                f"tokens) fill the {room} tokens retrieval may take"
            )
            return
        draft.reasons["summary"] = (
            f"up to {cap} tokens: a third of its share, retrieval finds the turns themselves"
        )
    label = f"Summary of the conversation up to message {s.to_seq}:\n"
    text, cut = _fit_lines(label + s.text, cap, count)
    if text:
        draft.head.append(_system(text))
        draft.sections["summary"] = count(text) + MESSAGE_OVERHEAD
        draft.left -= draft.sections["summary"]
        draft.summary = SummaryUse(s.seq, s.from_seq, s.to_seq, cut)


def _fill(
    draft: _Draft,
    turns: list[Turn],
    request: ContextRequest,
    policy: ContextPolicy,
    count: Callable[[str], int],
) -> tuple[list[Turn], Picked, int, int]:
    """Recent turns newest first up to the recent window's first claim, retrieved
    messages in the room that leaves, then what retrieval left unused to recent turns."""
    left, budget = draft.left, draft.budget
    share_cap = min(left, int(policy.retrieved_share * budget))
    if draft.intent == "past":
        first_claim = min(left, int(policy.recent_min_share * budget))
    elif draft.intent == "recent":
        first_claim = left
    else:
        first_claim = left - share_cap
    recent: list[Turn] = []
    spent = 0
    index = len(turns) - 1
    while index >= 0 and spent + turns[index].tokens <= first_claim:
        spent += turns[index].tokens
        recent.append(turns[index])
        index -= 1

    # Retrieval gets its share (a follow-up), all but the recent floor (a question about
    # the past), or all that is left when every tail turn already fits.
    room = share_cap if draft.intent in ("follow-up", "fixed") else left - spent
    limit = policy.retrieve_k
    if index < 0:
        room, limit = left - spent, 3 * policy.retrieve_k
    exclude = {e.seq for t in recent for e in t.events}
    picked, cost = _pack(room, limit, exclude, request, policy, count)
    if request.candidates:
        draft.reasons["retrieved"] = (
            f"{room} tokens offered, {cost} used: {len(picked)} messages "
            f"from {len(request.candidates)} candidates (at most {limit} hits)"
        )
    elif request.retrieval_note:
        draft.reasons["retrieved"] = request.retrieval_note

    # What retrieval left unused flows to the recent window.
    while index >= 0 and spent + turns[index].tokens <= left - cost:
        turn = turns[index]
        spent += turn.tokens
        recent.append(turn)
        index -= 1
        seqs = set(turn.seqs)
        if any(e.seq in seqs for e, _ in picked):
            picked = [p for p in picked if p[0].seq not in seqs]
            cost = excerpt_cost(picked, request.dates, count, request.line_tokens)
    recent.reverse()
    draft.reasons["recent"] = (
        f"{spent} tokens: the newest {len(recent)} of {len(turns)} turns "
        f"(first claim {first_claim}, then what retrieval left)"
    )

    # The section's count is the sum of its lines' as laid out (see excerpts()), found
    # without encoding the section. Packing counted each date once; a date that comes
    # back after another is shown again: drop the weakest excerpts while over.
    exact = excerpt_cost(picked, request.dates, count, request.line_tokens)
    while picked and spent + exact > left:
        picked.remove(min(picked, key=lambda p: (p[1], p[0].seq)))
        exact = excerpt_cost(picked, request.dates, count, request.line_tokens)
    return recent, picked, spent, exact


def _pack(
    room: int,
    limit: int,
    exclude: set[int],
    request: ContextRequest,
    policy: ContextPolicy,
    count: Callable[[str], int],
) -> tuple[Picked, int]:
    """Hits best first while they fit (a message too long for what is left is cut to its
    sentences that share words with the current message), then their neighbours."""
    chosen: dict[int, tuple[Event, float]] = {}
    labels: set[str] = set()
    cost = header_cost(count)
    dates = request.dates
    kept = request.line_tokens

    def take(event: Event, score: float) -> bool:
        nonlocal cost
        if event.seq in chosen or event.seq in exclude:
            return False
        label = dates.get(event.seq)
        known = kept(event) if kept is not None else None
        extra = line_cost(event, count) if known is None else known
        if label is not None and label not in labels:
            extra += date_cost(label, count)
        if cost + extra > room:
            return False
        chosen[event.seq] = (event, score)
        cost += extra
        if label is not None:
            labels.add(label)
        return True

    query = set(tokenize(event_text(request.current), stem=True)) if request.current else set()
    hits: list[tuple[Event, float]] = []
    cuts = 0
    for turn, score in request.candidates:
        if len(hits) >= limit or room - cost < MIN_LINE:
            break
        if any(e.seq in exclude or e.seq in chosen for e in turn.events):
            continue
        events = list(turn.events)
        if 0 < policy.sentences_after <= len(hits) and len(events) == 1:
            events = [cut(events[0], query) or events[0]]
        saved_cost, saved_labels = cost, set(labels)
        taken: list[Event] = []
        for e in events:
            if not take(e, score):
                break
            taken.append(e)
        if len(taken) == len(events):
            hits += [(e, score) for e in events]
            continue
        for e in taken:
            del chosen[e.seq]
        cost = saved_cost
        labels.intersection_update(saved_labels)
        if len(events) == 1 and cuts < MAX_CUTS and room - cost >= 2 * MIN_LINE:
            cuts += 1
            if (short := cut(events[0], query)) is not None and take(short, score):
                hits.append((short, score))
    if policy.neighbours:
        for event, score in hits:
            for near in request.neighbours.get(event.seq, ()):
                take(near, score / 2)
    picked = list(chosen.values())
    return picked, (cost if picked else 0)


def _chat_message(event: Event) -> Message:
    message = to_openai(event, include_extra=False)
    note = partial_note(event)
    if note:
        content = message.get("content")
        message["content"] = (content if isinstance(content, str) else "") + note
    return message
