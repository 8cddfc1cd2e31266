"""Commitments in one message: promises made, promises reversed, topics denied. Pure.

* :func:`promises`: what an assistant agreed to, did or decided, sentence by sentence
  (``I've issued a refund``, ``I will escalate this``, ``your order has been cancelled``,
  ``Booking was successful``). Tense gives the status: done is ``fulfilled``, promised
  is ``active``. Questions, offers (``I can``, ``would you like me to``) and negated
  sentences are not commitments.
* :func:`reversals`: topics an assistant reversed (``I've cancelled the refund``).
* :func:`constraints`: constraints a user set (``don't call me``, ``it must be
  vegetarian``, ``under $500``), kept as commitments of topic ``constraint``.
* :func:`denials`: sentences that deny a topic (``we don't offer refunds``, ``there is
  no booking under your name``): the contradiction detector's half of this vocabulary;
  :func:`denials_of` does the same for the words of one commitment (:func:`anchors`),
  for commitments outside the fixed topics (``I've extended your checkout`` is denied by
  ``late checkout isn't available``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from chatstate.state.vocab import TOPICS, sentences, topic_of

__all__ = ["Promise", "anchors", "constraints", "denials", "denials_of", "promises", "reversals"]

_I = re.IGNORECASE

_VERBS = (
    r"issu\w*|process\w*|approv\w*|initiat\w*|start\w*|refund\w*|escalat\w*|cancel\w*"
    r"|book\w*|reserv\w*|schedul\w*|arrang\w*|send|sent|sending|ship\w*|appl(?:y|ied)|add\w*"
    r"|credit\w*|waiv\w*|open\w*|creat\w*|logg?\w*|fil(?:e|ed)|submit\w*|plac\w*|order\w*"
    r"|replac\w*|expedit\w*|transferr?\w*|e-?mail\w*|updat\w*|chang\w*|reset\w*"
    r"|call you back|get back to you|follow up|make sure|ensure|waive"
)
_FIRST_PERSON = re.compile(
    r"\b(?P<who>i|we)(?P<aux>'ve|'ll|'m| have| will| shall| am| are| just| already| now"
    r"| am going to|'m going to| are going to|'re going to)*"
    r"(?:\s+(?:just|already|now|gone ahead and|successfully|also|personally|going to))*"
    r"\s+(?P<verb>" + _VERBS + r")\b",
    _I,
)
_PERFECT = re.compile(
    r"\b(?:i|we)(?:'ve| have)\s+(?:just\s+|already\s+|now\s+|also\s+|gone ahead and\s+)?"
    r"(?P<verb>(?!(?:checked|looked|found|noticed|seen|reviewed|noted|received|read|understood"
    r"|been|had|heard|tried|asked|explained|mentioned|said|told|confirmed that)\b)[a-z]+(?:ed|en))"
    r"\s+(?:your|the|a|an|this|that|it|customer|order|account|membership|reservation|booking)\b",
    _I,
)
_PASSIVE = re.compile(
    r"\b(?:your|the|this|a|an)\s+(?P<obj>(?:\S+\s+){0,7}?)"
    r"(?P<aux>has been|have been|was|were|is now|are now|will be|is being|'s been|is)"
    r"\s+(?:successfully\s+|fully\s+|now\s+)?(?P<verb>"
    + _VERBS
    + r"|confirmed|on (?:its|their) way)\b",
    _I,
)
_DONE_NOUN = re.compile(
    r"\b(?P<verb>booking|reservation|refund|cancellation|escalation)\s+(?:was|is|has been)\s+"
    r"(?:successful|confirmed|complete|completed|approved)\b|\byou(?:'re| are) (?:all )?"
    r"(?P<booked>booked|confirmed)\b",
    _I,
)
_FUTURE = re.compile(r"'ll\b|\bwill\b|\bshall\b|\bgoing to\b|\bis being\b|\bstarting\b", _I)
_NOT_A_PROMISE = re.compile(
    r"^(?:would you|shall i|should i|do you|if you|can i|could i|may i)\b"
    r"|\b(?:i|we) (?:can|could|might|may)\b|\bwould you like\b|\bif you(?:'d| would)? like\b"
    r"|\bonce you\b|\bas soon as you\b|\bunless\b",
    _I,
)
_NEGATED = re.compile(
    r"\b(?:not|never|no longer|unable|cannot)\b|n't\b|\bunfortunately\b|\bsorry\b", _I
)
_REVERSE = re.compile(
    r"\b(?:cancell?ed|reversed|withdrawn|withdrew|revoked|voided|called off|undone|undid"
    r"|stopped|rescinded|retracted)\b",
    _I,
)
_CONSTRAINT = re.compile(
    r"\b(?:please\s+)?(?:do not|don't|never)\s+(?:call|phone|text|e-?mail|contact|message)\s+me\b"
    r"|\bonly\s+(?:contact|e-?mail|call|text|message|reach)\s+me\b"
    # "must have been", "should have had": an inference about the past, not a constraint
    r"|\b(?:it|this|they|the \w+)\s+(?:must|has to|have to|needs to|need to|should)\s+"
    r"(?!have\s+(?:been|had|gone|done|\w+ed)\b)"
    r"(?:be|have|include|support|work|fit|run|arrive|use|stay)\b"
    r"|\b(?:no more than|not more than|at most|under|below|less than|max(?:imum)? of)\s+"
    r"(?:[$€£]\s?\d|\d+\s*(?:dollars|euros|pounds|words|minutes|hours|days|pages|lines|kg))"
    r"|\bi(?:'m| am)\s+(?:allergic to|vegetarian|vegan|gluten[- ]free|lactose intolerant)"
    r"|\b(?:make sure|ensure)\s+(?:it|that|the|you)\b|\bwithout\s+(?:using\s+)?any\b"
    r"|\b(?:i|we)\s+(?:need|want)\s+it\s+(?:by|before|to be)\b",
    _I,
)
_DENY_BEFORE = re.compile(
    r"(?:\bno\b|\bnot\b|\bnever\b|n't\b|\bcannot\b|\bunable to\b|\bno such\b|\bnothing\b)"
    r"(?P<gap>(?:\s+[\w'-]+){0,4}?)\s+$",
    _I,
)
_DENY_AFTER = re.compile(
    r"^(?:\s+[\w'-]+){0,4}?\s+(?:(?:is|was|were|are|has been|have been|had been)\s+)?"
    r"(?:not possible|not available|not eligible|not approved|denied|declined|rejected"
    r"|refused|impossible|not something|never|isn't|wasn't|aren't|doesn't exist"
    r"|does not exist|not (?:on record|on file|in (?:our|the) system)|can't be|cannot be"
    r"|won't be|will not be)\b",
    _I,
)
_HARMLESS = re.compile(
    r"\bno (?:problem|worries|need to worry|trouble)\b|\bnot at all\b|\bnot only\b"
    r"|\b(?:don't|do not|won't|will not) (?:need|have) to\b|\bdon't forget\b|\bno need\b"
    r"|\bnot to worry\b|\bnot long\b|\bno later than\b|\bno extra\b",
    _I,
)


@dataclass(frozen=True, slots=True)
class Promise:
    text: str
    topic: str | None
    status: Literal["active", "fulfilled"]


def _clip(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    return sentence if len(sentence) <= 200 else sentence[:197].rstrip() + "..."


def promises(text: str) -> list[Promise]:
    """The commitments an assistant message makes, one per sentence at most."""
    out: list[Promise] = []
    for sentence in sentences(text):
        if sentence.endswith("?") or _NOT_A_PROMISE.search(sentence):
            continue
        match = _DONE_NOUN.search(sentence)
        verb: str | None = None
        status: Literal["active", "fulfilled"] = "fulfilled"
        if match:
            verb = match.group("verb") or "book"
        else:
            match = (
                _FIRST_PERSON.search(sentence)
                or _PASSIVE.search(sentence)
                or _PERFECT.search(sentence)
            )
            if match is None or _NEGATED.search(sentence[: match.end()]):
                continue
            verb = match.group("verb")
            if _FUTURE.search(match.group(0)):
                status = "active"
        if match is None:  # pragma: no cover - narrowed above
            continue
        topic = topic_of(sentence, verb)
        if topic is None and verb.lower().startswith(("send", "sent")):
            topic = "shipment"
        out.append(Promise(_clip(sentence), topic, status))
    return out


def reversals(text: str) -> list[tuple[str, str]]:
    """``(topic, sentence)`` for each topic the message says was reversed, other than
    cancellation itself (``I've cancelled the refund`` reverses *refund*)."""
    out: list[tuple[str, str]] = []
    for sentence in sentences(text):
        if sentence.endswith("?") or not _REVERSE.search(sentence):
            continue
        if _NOT_A_PROMISE.search(sentence):
            continue
        for name, pattern in TOPICS.items():
            if name != "cancellation" and pattern.search(sentence):
                out.append((name, _clip(sentence)))
    return out


def constraints(text: str) -> list[str]:
    """The constraints a user message sets, one per sentence."""
    return [_clip(s) for s in sentences(text) if _CONSTRAINT.search(s)]


def denials(text: str) -> list[tuple[str, str]]:
    """``(topic, sentence)`` for each sentence that denies a commitment topic."""
    out: list[tuple[str, str]] = []
    for sentence in sentences(text):
        if sentence.endswith("?"):
            continue
        clean = _HARMLESS.sub(" ", sentence)
        for name, pattern in TOPICS.items():
            for hit in pattern.finditer(clean):
                before, after = clean[: hit.start()], clean[hit.end() :]
                if _DENY_BEFORE.search(before) or _DENY_AFTER.match(after):
                    out.append((name, _clip(sentence)))
                    break
            else:
                continue
            break
    return out


_GENERIC = frozenset(
    "about after again also account before business could customer details email emailed "
    "every further hours information minutes number order please reference request "
    "should still their there thank thanks these those today tomorrow until which while "
    "within would charge charged price cost costs extra free right sorry great happy "
    "member membership there's you're we've i've we'll i'll under above below between "
    "through during without against among across behind beyond since around other another "
    "being having going doing making".split()
)
_DENY_NEAR = re.compile(
    r"(?:\bno\b|\bnot\b|\bnever\b|n't\b|\bcannot\b|\bunable to\b|\bno such\b)"
    r"(?:\s+[\w'-]+){0,2}?\s+$",
    _I,
)


def anchors(text: str) -> set[str]:
    """The distinctive words of a commitment: alphabetic, five letters or more, not generic;
    compared by their first five letters (``renewed`` matches ``renew``)."""
    return {w[:5] for w in re.findall(r"[a-z][a-z']+", text.lower()) if len(w) >= 5} - {
        g[:5] for g in _GENERIC
    }


def denials_of(text: str, words: set[str]) -> list[str]:
    """The sentences of ``text`` that negate one of ``words`` (as :func:`anchors` gives)."""
    out: list[str] = []
    for sentence in sentences(text):
        if sentence.endswith("?"):
            continue
        clean = _HARMLESS.sub(" ", sentence)
        for hit in re.finditer(r"[A-Za-z][A-Za-z']+", clean):
            if len(hit.group(0)) < 5 or hit.group(0).lower()[:5] not in words:
                continue
            before, after = clean[: hit.start()], clean[hit.end() :]
            if _DENY_NEAR.search(before) or _DENY_AFTER.match(after):
                out.append(_clip(sentence))
                break
    return out
