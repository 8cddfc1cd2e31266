"""Detectors over a session's messages: drift, context pressure, summary loss. Pure.

Drift:

* :func:`inconsistency`: the assistant answers the same question differently within the
  session: (a) it reverses its answer when the user merely pushes back (``Are you sure?``
  then ``You're right, I apologise, it is ...``), or (b) the user asks the same question
  twice and the two answers carry different numbers or a flipped yes/no.
* :func:`length_inflation`: the assistant's replies grow turn over turn (four or more in a
  row, each at least 10% longer, the last at least twice the first and over 150 tokens,
  and more than twice what the user has written so far) although the user did not ask
  for more detail.
* :func:`premature_commitment`: the assistant settles on a full answer early; the user
  then adds a constraint or more input, and a later reply repeats the early answer
  nearly verbatim, ignoring what was added.

Pressure and loss:

* :func:`context_pressure`: from the log, the history that no summary covers outgrows the
  budget (the next builds must drop turns nobody summarised); and the tokens per turn
  grow much faster than the conversation (the mean of the last quarter of turns at least
  three times that of the first, eight turns or more). :func:`manifest_pressure` reads a
  context manifest: the budget nearly spent (95%), or something dropped without a summary
  covering it (``silent_truncation``). Each condition flags once, when it starts.
* :func:`summary_loss`: a summary replaced events holding facts (what the offline
  extractor reads: identifiers, e-mails, amounts, bookings; and every number, id, e-mail
  or link of three characters or more, as the summarisers' fact guard sees them) that
  appear neither in the summary's text nor among the stored state's current values.
  Superseded values (a corrected order number) are not counted as lost.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from chatstate.context.extractive import fact_tokens
from chatstate.context.manifest import Manifest
from chatstate.health.detectors import Flag
from chatstate.state.changes import Fact, normalise_value
from chatstate.state.mentions import fact_mentions
from chatstate.state.promises import constraints
from chatstate.state.vocab import words

__all__ = [
    "Said",
    "SummarySpan",
    "context_pressure",
    "inconsistency",
    "length_inflation",
    "manifest_pressure",
    "premature_commitment",
    "similarity",
    "summary_loss",
]

_I = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class Said:
    """One chat message as the drift detectors see it."""

    seq: int
    role: str
    text: str
    tokens: int


_STOP = frozenset(
    "the a an is are was were be been do does did can could would will should i you me my "
    "your it its this that these those what when where how why which who whom of to for in "
    "on at by and or but with from as so if then than there here any some please just also "
    "about into not no yes have has had we our they them their he she his her".split()
)


def _content(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP and len(w) > 2}


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the content words of ``a`` and ``b`` (0 when either has none)."""
    x, y = _content(a), _content(b)
    return len(x & y) / len(x | y) if x and y else 0.0


_CHALLENGE = re.compile(
    r"\bare you (?:sure|certain|positive)\b|\bis that (?:right|correct|true|accurate|really)\b"
    r"|\bi (?:don't|do not) think (?:that's|that is|so|this is|it's|it is)\b"
    r"|\b(?:seems|sounds|looks) (?:too |a bit |a little |rather |quite |way )?(?:high|low|much"
    r"|little|wrong|off|odd|strange|incorrect|like a lot)\b|\b(?:doesn't|does not) (?:sound|seem"
    r"|look) (?:quite )?right\b|\b(?:not|isn't|is not|wasn't) (?:correct|accurate|right|true)\b"
    r"|\bthat(?:'s| is) (?:wrong|not right|incorrect|a mistake)\b|\bcheck (?:that|this|it|your|the)"
    r"\b[^.?!]{0,30}\bagain\b|\bcheck your (?:facts|answer|information)\b|\bdouble[- ]check\b"
    r"|\b(?:can|could) you (?:please )?(?:verify|check|confirm) (?:that|this|it)\b"
    r"|\breally\?|\bi(?:'ve| have)? (?:heard|read|seen|been told)\b|\bi (?:thought|believe|recall"
    r"|remember)\b|\bunder the impression\b|\bbut (?:isn't|aren't|doesn't|don't|wasn't|shouldn't"
    r"|didn't)\b|\b(?:isn't|aren't) (?:that|it|this|there)\b"
    r"|\b(?:a |the )?(?:mistake|error|confusion) (?:there|here|in)\b|\bthat can't be right\b",
    _I,
)
_CONCEDE = re.compile(
    r"\b(?:you(?:'re| are) (?:absolutely |quite |indeed |totally )?(?:right|correct)\b(?! to)"
    r"|you (?:may|might|could) (?:well )?be right|apologi[sz]e|apologies|sorry(?:,| for| about)"
    r"|my (?:mistake|error|bad)|error on my part|i made (?:a|an) (?:mistake|error)|correction:"
    r"|i (?:was|am) (?:wrong|mistaken|incorrect)|(?:got|had) (?:that|it|this) wrong"
    r"|correct myself|i stand corrected|revise (?:that|my)|let me (?:correct|reconsider|rethink)"
    r"|upon (?:further )?review|i misspoke|i overstated|thank(?:s| you) for (?:pointing|catching"
    r"|pushing|the correction)|good catch|fair point|on (?:second thought|reflection)"
    r"|(?:i see|i take|you have) (?:your |a )?point)",
    _I,
)
_REAFFIRM = re.compile(
    r"\bi(?:'m| am) (?:sure|certain|confident)\b|\bi stand by\b|\bis (?:indeed|still) correct\b"
    r"|\bthat is correct\b|\bremains? (?:correct|accurate)\b",
    _I,
)


def _reverses(answer: str) -> bool:
    """A concession in the opening of ``answer``, and no reaffirmation of the old one."""
    opening = " ".join(re.split(r"(?<=[.!?])\s+", answer.strip())[:2])[:240]
    return bool(_CONCEDE.search(opening)) and not _REAFFIRM.search(opening)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_YES = re.compile(r"^\W*(?:yes|yeah|yep|correct|that's right|indeed|absolutely)\b", _I)
_NO = re.compile(r"^\W*(?:no|nope|not really|unfortunately not)\b", _I)


def _previous_assistant(messages: Sequence[Said], index: int) -> Said | None:
    for m in reversed(messages[:index]):
        if m.role == "assistant":
            return m
    return None


def _answer_after(messages: Sequence[Said], index: int) -> Said | None:
    for m in messages[index + 1 :]:
        if m.role == "user":
            return None
        if m.role == "assistant":
            return m
    return None


def _polarity(text: str) -> str | None:
    return "yes" if _YES.search(text) else "no" if _NO.search(text) else None


def inconsistency(messages: Sequence[Said]) -> list[Flag]:
    """Flags for answers that change under pushback or differ for the same question."""
    out: list[Flag] = []
    flagged: set[int] = set()
    questions: list[tuple[int, Said]] = []
    for index, m in enumerate(messages):
        if m.role != "user":
            continue
        answer = _answer_after(messages, index)
        before = _previous_assistant(messages, index)
        if (
            answer is not None
            and before is not None
            and _CHALLENGE.search(m.text)
            and _reverses(answer.text)
        ):
            detail = f"reversed the answer of #{before.seq} when challenged at #{m.seq}"
            out.append(Flag.of("inconsistency", answer.seq, [before.seq, m.seq], detail))
            flagged.add(answer.seq)
            continue
        if answer is None or not m.text.rstrip().endswith("?"):
            continue
        for first_index, first in questions:
            if len(_content(m.text)) < 3 or similarity(first.text, m.text) < 0.6:
                continue
            earlier = _answer_after(messages, first_index)
            if earlier is None or answer.seq in flagged:
                continue
            a, b = set(_NUMBER.findall(earlier.text)), set(_NUMBER.findall(answer.text))
            pa, pb = _polarity(earlier.text), _polarity(answer.text)
            if (a and b and not a & b) or (pa and pb and pa != pb):
                detail = f"answered the question of #{first.seq} differently at #{answer.seq}"
                out.append(
                    Flag.of("inconsistency", answer.seq, [first.seq, earlier.seq, m.seq], detail)
                )
                flagged.add(answer.seq)
        questions.append((index, m))
    return out


_MORE = re.compile(
    r"\b(?:more (?:detail|details|depth|examples?)|elaborate|expand|longer|in depth|go deeper"
    r"|explain (?:more|further|in detail)|full (?:version|text|code)|step by step|everything)\b",
    _I,
)


def length_inflation(
    messages: Sequence[Said],
    *,
    run: int = 4,
    growth: float = 1.1,
    factor: float = 2.0,
    floor: int = 150,
) -> list[Flag]:
    """One flag per run of growing assistant replies (see the module docstring)."""
    out: list[Flag] = []
    streak: list[Said] = []
    asked_more = False
    given = 0  # tokens the user has supplied so far: a reply may grow with its input
    for m in messages:
        if m.role == "user":
            asked_more = asked_more or bool(_MORE.search(m.text))
            given += m.tokens
            continue
        if m.role != "assistant":
            continue
        if streak and m.tokens >= streak[-1].tokens * growth:
            streak.append(m)
        else:
            streak, asked_more = [m], False
        long_enough = len(streak) >= run and m.tokens >= floor
        unexplained = m.tokens > factor * given
        grown = long_enough and m.tokens >= factor * streak[0].tokens and unexplained
        grown = grown and not asked_more
        if grown and (not out or out[-1].evidence[0] != streak[0].seq):
            first = streak[0].tokens
            detail = f"replies grew from {first} to {m.tokens} tokens over {len(streak)} turns"
            out.append(Flag.of("length_inflation", m.seq, [s.seq for s in streak], detail))
    return out


_SOLUTION = re.compile(
    r"\bhere(?:'s| is| are)\b|\bi (?:recommend|suggest|propose)\b"
    r"|\bthe best (?:option|choice|way)\b"
    r"|\byou should\b|\bmy recommendation\b|\bfinal\b|```|\btranslation\b|^\s*(?:\d+\.|[-*])\s",
    _I | re.MULTILINE,
)
_ADDS = re.compile(
    r"\b(?:also|actually|i forgot to mention|one more thing|oh and|additionally|instead|but it"
    r"|make sure|it (?:should|must|needs to|has to)|only|without|here is the next|continu\w*"
    r"|next part|another part|the rest)\b",
    _I,
)


def premature_commitment(messages: Sequence[Said], *, repeat: float = 0.8) -> list[Flag]:
    """Flags for replies that repeat an early full answer after the user added to it."""
    out: list[Flag] = []
    solution: Said | None = None
    added: Said | None = None
    for index, m in enumerate(messages):
        if m.role == "user":
            if solution is not None and (
                constraints(m.text) or _ADDS.search(m.text) or len(m.text) > 200
            ):
                added = added or m
            continue
        if m.role != "assistant":
            continue
        if solution is None:
            earlier_users = [u for u in messages[:index] if u.role == "user"]
            size = len(words(m.text))
            if len(earlier_users) <= 2 and (
                size >= 60 or (size >= 15 and _SOLUTION.search(m.text))
            ):
                solution = m
            continue
        if added is not None:
            fresh = _content(m.text) - _content(solution.text)
            little_new = len(fresh) <= 0.15 * max(1, len(_content(m.text)))
            if similarity(solution.text, m.text) >= repeat and little_new:
                detail = f"repeated #{solution.seq} after the user added to it at #{added.seq}"
                out.append(
                    Flag.of("premature_commitment", m.seq, [solution.seq, added.seq], detail)
                )
            added = None
    return out


# -- context pressure and summary loss ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummarySpan:
    seq: int
    from_seq: int
    to_seq: int
    text: str


def context_pressure(
    messages: Sequence[Said], summaries: Sequence[SummarySpan], *, budget: int | None
) -> list[Flag]:
    """Flags from the log: uncovered history over ``budget``; tokens per turn growing."""
    out: list[Flag] = []
    if budget is not None and budget > 0:
        seqs = [m.seq for m in messages]
        prefix = [0]
        for m in messages:
            prefix.append(prefix[-1] + m.tokens)
        covered_to = 0
        pending = sorted(summaries, key=lambda s: s.seq)
        over = False
        for index, m in enumerate(messages):
            while pending and pending[0].seq <= m.seq:
                covered_to = max(covered_to, pending.pop(0).to_seq)
            start = bisect_right(seqs, covered_to)  # first message no summary covers
            tokens = prefix[index + 1] - prefix[start]
            if tokens > budget and not over:
                detail = f"{tokens} tokens of history no summary covers; the budget is {budget}"
                out.append(Flag.of("context_pressure", m.seq, [seqs[start], m.seq], detail))
            over = tokens > budget
    turns: list[tuple[int, int]] = []  # (first seq, tokens) per user-started turn
    for m in messages:
        if m.role == "user" or not turns:
            turns.append((m.seq, 0))
        turns[-1] = (turns[-1][0], turns[-1][1] + m.tokens)
    if len(turns) >= 8:
        quarter = len(turns) // 4
        first = sum(t for _, t in turns[:quarter]) / quarter
        last = sum(t for _, t in turns[-quarter:]) / quarter
        if first > 0 and last >= 3 * first:
            detail = f"tokens per turn grew from {first:.0f} to {last:.0f} on average"
            seq = messages[-1].seq
            out.append(Flag.of("context_pressure", seq, [turns[-quarter][0], seq], detail))
    return out


def manifest_pressure(manifest: Manifest, *, seq: int, full: float = 0.95) -> list[Flag]:
    """Flags from one build's manifest, attributed to the event ``seq``."""
    out: list[Flag] = []
    if manifest.silent_truncation:
        dropped = manifest.dropped[:3] or (
            (manifest.uncovered_before,) if manifest.uncovered_before is not None else ()
        )
        detail = f"{len(manifest.dropped)} events dropped with no summary covering them"
        out.append(Flag.of("context_pressure", seq, [*dropped, seq], detail))
    elif manifest.budget and manifest.used >= full * manifest.budget:
        detail = f"{manifest.used} of {manifest.budget} tokens used"
        out.append(Flag.of("context_pressure", seq, [seq], detail))
    return out


def summary_loss(
    summary: SummarySpan,
    messages: Sequence[Said],
    stored_facts: Mapping[str, Fact],
    *,
    superseded: Collection[str] = (),
) -> list[Flag]:
    """A flag when ``summary`` lost facts of the messages it covers (module docstring).

    ``superseded``: values a correction replaced (losing those is fine)."""
    text = normalise_value(summary.text)
    kept = {normalise_value(f.value) for f in stored_facts.values()}
    dropped = {normalise_value(v) for v in superseded}
    lost: dict[str, int] = {}
    for m in messages:
        if not summary.from_seq <= m.seq <= summary.to_seq or m.role not in ("user", "assistant"):
            continue
        values = [mention.value for mention in fact_mentions(m.text, role=m.role)]
        values += [t for t in fact_tokens(m.text) if len(t) >= 3]
        for value in values:
            norm = normalise_value(value)
            if norm and norm not in text and norm not in kept and norm not in dropped:
                lost.setdefault(value, m.seq)
    if not lost:
        return []
    names = ", ".join(list(lost)[:5])
    detail = f"summary #{summary.seq} lost {len(lost)} facts: {names}"
    return [Flag.of("summary_loss", summary.seq, sorted(set(lost.values())), detail)]
