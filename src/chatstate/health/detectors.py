"""Flags, and the two detectors that read the session state: re-ask and contradiction. Pure.

Each detector takes one assistant message and the state as it stood before that message
(facts and commitments with the seqs that established them) and returns flags whose
``evidence`` names those seqs and the message's own.

* :func:`re_ask`: the assistant asks for something the state already holds (``What is
  your account number?`` after the user gave it), or says it does not have it. Not a
  re-ask: asking for a *new*, *another* or *correct* one; a question that quotes the value
  to confirm it; asking again right after a lookup failed (``I couldn't find ...``).
* :func:`contradiction`: the assistant (a) uses a value the user corrected, (b) states a
  user's identifier with another value, (c) denies a commitment in force (``we don't
  offer refunds`` after ``I've issued a refund``), or (d) gives a commitment in force
  another amount. A denial about another object (a hotel, when the booking made was a
  train) is not a contradiction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from chatstate.model import JSONValue
from chatstate.state.changes import Commitment, Fact, normalise_value
from chatstate.state.mentions import fact_mentions, id_tokens
from chatstate.state.promises import anchors, denials, denials_of
from chatstate.state.vocab import ID_LABELS, PERSONAL_LABELS, words

__all__ = ["DETECTORS", "WEIGHTS", "DetectorName", "Flag", "asked_keys", "contradiction", "re_ask"]

DetectorName = Literal[
    "re_ask",
    "contradiction",
    "context_pressure",
    "summary_loss",
    "inconsistency",
    "length_inflation",
    "premature_commitment",
]
DETECTORS: tuple[DetectorName, ...] = (
    "re_ask",
    "contradiction",
    "context_pressure",
    "summary_loss",
    "inconsistency",
    "length_inflation",
    "premature_commitment",
)
WEIGHTS: dict[DetectorName, float] = {
    "contradiction": 0.25,
    "re_ask": 0.15,
    "inconsistency": 0.15,
    "summary_loss": 0.15,
    "premature_commitment": 0.10,
    "context_pressure": 0.10,
    "length_inflation": 0.05,
}
"""How much one flag of each detector takes off a session's score (which starts at 1)."""


@dataclass(frozen=True, slots=True)
class Flag:
    detector: DetectorName
    seq: int
    """The event where the failure shows (an assistant message, a summary, a turn)."""
    evidence: tuple[int, ...]
    """Every seq that backs the flag, ``seq`` included, ascending."""
    detail: str

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "detector": self.detector,
            "seq": self.seq,
            "evidence": list(self.evidence),
            "detail": self.detail,
        }

    @classmethod
    def of(
        cls, detector: DetectorName, seq: int, evidence: Sequence[int | None], detail: str
    ) -> Flag:
        seqs = {s for s in evidence if s is not None} | {seq}
        return cls(detector, seq, tuple(sorted(seqs)), detail)


_I = re.IGNORECASE
_ASK = re.compile(
    r"(?:\bwhat(?:'s| is| was| are| were)\s+(?:your|the|a|an)"
    r"|\b(?:(?:could|can|would|will)\s+you|(?:would you )?mind)\s+(?:please\s+)?(?:provide|give"
    r"|share|send|tell|confirm|enter|type|supply|let me know|verify|re-?enter|double[- ]check"
    r"|spell|repeat|remind|providing|giving|sharing|sending|telling|confirming|letting me know)"
    r"\s+(?:me\s+|us\s+)?(?:with\s+|of\s+|what\s+)?(?:your|the|a|an)"
    r"|\b(?:may|can|could)\s+(?:i|we)\s+(?:please\s+)?(?:have|get|ask for|take|grab)\s+(?:your|the)"
    r"|\bplease\s+(?:provide|give|share|send|tell me|confirm|enter|let me know|verify|type)"
    r"\s+(?:me\s+)?(?:with\s+)?(?:your|the)"
    r"|\b(?:i|we)(?:'ll| will)?\s+(?:still\s+|also\s+|first\s+)?(?:need|require)\s+(?:your|the)"
    r"|\bdo you have\s+(?:your|the|an?)"
    r"|\b(?:which|what)"
    r"|\bi\s+(?:don't|do not)\s+(?:have|see)\s+(?:your|the|an?|any)"
    r"|\byou\s+(?:haven't|have not|didn't|did not)\s+(?:yet\s+)?(?:provided|given|shared|told me"
    r"|sent|mentioned|provide|give|share|tell me|send|mention)\s+(?:me\s+)?(?:your|the|an?|any)"
    r"|\bremind me\s+(?:of\s+)?(?:your|the|what))"
    r"\s+(?P<rest>[^?.!\n]{1,60})",
    _I,
)
_HOW_MANY = re.compile(
    r"\bhow many\s+(?P<what>people|persons|guests|of you|adults|nights|seats|tickets)\b", _I
)
_SKIP_ADJECTIVES = frozenset(
    "full registered complete exact best good preferred contact account's email mobile".split()
)
_FRESH = frozenset(
    "new another other second different correct updated alternative additional backup "
    "right valid current alternate".split()
)
_FAILED = re.compile(
    r"\b(?:couldn't|could not|can't|cannot|unable to|wasn't able to|was not able to)\s+"
    r"(?:find|locate|verify|match|validate|access|pull up|see)\b|\bnot found\b|\bno match"
    r"|\b(?:doesn't|does not|didn't|did not) match\b|\binvalid\b|\bisn't valid\b|\bnot valid\b"
    r"|\bincorrect\b|\bno record\b|\bdidn't work\b|\bfailed\b|\bmismatch|\bnot recogni[sz]ed\b"
    r"|\"found\":\s*false|\bexpired\b|\bnot in our system\b",
    _I,
)
_SAME_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("name", "first_name", "preferred_name"),
    "phone": ("phone",),
    "booking_reference": ("booking_reference", "reference_number", "confirmation_number"),
    "reference_number": ("reference_number", "booking_reference", "confirmation_number"),
}


def _ask_table() -> dict[str, str]:
    table = {p: k for p, k in PERSONAL_LABELS.items() if p not in ("number", "card")}
    for label, key in ID_LABELS.items():
        for noun in ("number", "no", "no.", "num", "id", "code", "#", "reference", "ref"):
            table[f"{label} {noun}"] = key
    table.update(
        {
            "booking reference": "booking_reference",
            "confirmation code": "confirmation_number",
            "iban": "iban",
            "imei": "imei",
            "vin": "vin",
            "number": "phone",
            "day": "day",
            "time": "time",
            "party size": "party_size",
            "card number": "card_last4",
        }
    )
    return table


_ASK_TABLE = _ask_table()
_ASK_LABEL = re.compile(
    r"(?:" + "|".join(re.escape(p) for p in sorted(_ASK_TABLE, key=len, reverse=True)) + r")(?!\w)",
    _I,
)


def asked_keys(text: str) -> list[tuple[str, bool]]:
    """``(key, fresh)`` for each fact the message asks for; ``fresh`` when it asks for a
    new/another/correct one, which is not a re-ask."""
    out: list[tuple[str, bool]] = []
    for match in _ASK.finditer(text):
        rest = match.group("rest").strip()
        tokens = rest.split()
        fresh = False
        while tokens and tokens[0].lower() in _SKIP_ADJECTIVES | _FRESH:
            fresh = fresh or tokens[0].lower() in _FRESH
            if _ASK_LABEL.match(" ".join(tokens)):
                break
            tokens.pop(0)
        label = _ASK_LABEL.match(" ".join(tokens))
        if label:
            after = {w.lower().strip(",") for w in tokens[len(label.group(0).split()) :][:4]}
            out.append((_ASK_TABLE[label.group(0).lower()], fresh or bool(after & _FRESH)))
    for match in _HOW_MANY.finditer(text):
        out.append(("nights" if match.group("what").lower() == "nights" else "party_size", False))
    return out


def _said(value: str, text: str, tokens: set[str]) -> bool:
    low = value.lower()
    return low in tokens or (len(low) >= 3 and normalise_value(value) in normalise_value(text))


_TASK_SCOPED = frozenset({"party_size", "nights", "day", "time", "arrive_by", "leave_at"})
"""Booking details that belong to one task: a new goal (``I also need a hotel``) starts
them afresh, so asking the day of the hotel after the day of the train is no re-ask."""


def re_ask(
    seq: int,
    text: str,
    facts: Mapping[str, Fact],
    *,
    context: Sequence[str] = (),
    task_since: int | None = None,
) -> list[Flag]:
    """At most one re-ask flag for the assistant message ``text`` (see module docstring).
    ``context``: the texts since the user's last message (tool results, earlier replies);
    ``task_since``: the seq where the user's current goal was set."""
    if _FAILED.search(text) or any(_FAILED.search(c) for c in context):
        return []
    tokens = id_tokens(text)
    for key, fresh in asked_keys(text):
        if fresh:
            continue
        for candidate in _SAME_KEYS.get(key, (key,)):
            fact = facts.get(candidate)
            if fact is None or (fact.seq is not None and fact.seq >= seq):
                continue
            stale = task_since is not None and (fact.last_seq or 0) < task_since
            if candidate in _TASK_SCOPED and stale:
                continue
            if _said(fact.value, text, tokens):
                continue  # quoting the value back to confirm it
            detail = f"asked for {candidate}, already known since #{fact.seq}"
            return [Flag.of("re_ask", seq, [fact.seq, seq], detail)]
    return []


_OBJECTS = frozenset(
    "hotel train flight restaurant taxi car table room seat order subscription plan package "
    "membership course class tour phone laptop boots shoes jacket bike".split()
)
_AMOUNT = re.compile(r"[$€£¥]\s?\d[\d,]*(?:\.\d{1,2})?")


def _objects(text: str) -> set[str]:
    return {w.rstrip("s") if w.rstrip("s") in _OBJECTS else w for w in words(text)} & _OBJECTS


def _amounts(text: str) -> set[str]:
    return {re.sub(r"[\s,]|\.00$", "", a) for a in _AMOUNT.findall(text)}


def contradiction(
    seq: int,
    text: str,
    facts: Mapping[str, Fact],
    commitments: Sequence[Commitment],
    *,
    near: Callable[[int], str] | None = None,
) -> list[Flag]:
    """Contradiction flags for the assistant message ``text`` (see module docstring).
    ``near(seq)``: the text around a commitment's event, to tell what it was about when
    its own sentence does not say (``Booking was successful.``)."""
    out: list[Flag] = []
    tokens = id_tokens(text)
    for key, fact in facts.items():
        if fact.role == "assistant" or _said(fact.value, text, tokens):
            continue
        for old in fact.history:
            distinctive = len(old.value) >= 4 and (
                any(c.isdigit() for c in old.value) or "@" in old.value
            )
            if distinctive and _said(old.value, text, tokens):
                detail = (
                    f"used {key} {old.value!r}, corrected to {fact.value!r} at #{old.replaced_seq}"
                )
                out.append(Flag.of("contradiction", seq, [old.replaced_seq, seq], detail))
                break
    stated = {
        m.key: m.value for m in fact_mentions(text, role="user") if m.labelled or m.key == "email"
    }
    for key, value in stated.items():
        given = facts.get(key)
        if (
            given is None
            or given.role == "assistant"
            or key not in set(ID_LABELS.values()) | {"email"}
        ):
            continue
        known = {normalise_value(given.value)} | {normalise_value(h.value) for h in given.history}
        if normalise_value(value) not in known:
            detail = f"stated {key} {value!r}; the user gave {given.value!r}"
            out.append(Flag.of("contradiction", seq, [given.seq, seq], detail))
    in_force = [
        c for c in commitments if c.status != "revoked" and c.role != "user" and (c.seq or 0) < seq
    ]
    for topic, sentence in denials(text):
        for c in reversed(in_force):
            if c.topic != topic:
                continue
            mine, theirs = _objects(c.text), _objects(sentence)
            if not mine and near is not None and c.seq is not None:
                mine = _objects(near(c.seq))
            if mine and theirs and not mine & theirs:
                continue  # about another object: a hotel is not the train that was booked
            detail = f"denies {topic} committed at #{c.seq}: {sentence!r}"
            out.append(Flag.of("contradiction", seq, [c.seq, seq], detail))
            break
    if not out:  # commitments outside the fixed topics: their own words, negated
        for c in reversed(in_force):
            hits = denials_of(text, anchors(c.text))
            if hits:
                detail = f"denies what was committed at #{c.seq}: {hits[0]!r}"
                out.append(Flag.of("contradiction", seq, [c.seq, seq], detail))
                break
    said_amounts = _amounts(text)
    for c in in_force:
        theirs = _amounts(c.text)
        if not theirs or not said_amounts or c.topic is None:
            continue
        if re.search(c.topic[:5], text, _I) and not theirs & said_amounts:
            detail = (
                f"{c.topic} amount {sorted(said_amounts)} differs from #{c.seq}: {sorted(theirs)}"
            )
            out.append(Flag.of("contradiction", seq, [c.seq, seq], detail))
    return out[:1] if out else []
