"""The offline extractor, and the default: regular rules over each new message. Pure.

Per user message: facts (:mod:`chatstate.state.mentions`); corrections (``actually it's
48231``, ``sorry, I meant ...``, ``X, not Y``), filed on the key the speaker named or,
unnamed, on the fact whose value looks most like the new one; constraints; the goal
(``I'd like to ...``, kept until the user switches task); open questions. Per assistant
message: identifiers it issues, commitments, reversals, fulfilment of an earlier promise
on the same topic, and which open questions it answered.

Confidence: 0.9 for a labelled identifier, less for values recognised by shape only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from chatstate.context.text import event_text
from chatstate.model import Event, JSONValue
from chatstate.state.changes import (
    Change,
    Fact,
    Op,
    commitments_of,
    facts_of,
    normalise_value,
)
from chatstate.state.fold import apply_all
from chatstate.state.mentions import Mention, fact_mentions, id_tokens
from chatstate.state.promises import constraints, promises, reversals
from chatstate.state.vocab import sentences, words

__all__ = ["RuleExtractor", "spoken_text"]

_I = re.IGNORECASE
_CORRECTION = re.compile(
    r"\b(?:actually|sorry|oops|correction|i meant|i mean|my mistake|my bad|typo|mistyped"
    r"|scratch that|i misspoke|let me correct|wrong (?:number|one|email|address)"
    r"|should (?:be|have been)|swapped|not \S+ but)\b|^\s*no[,!.]",
    _I,
)
_NOT_PREVIOUS = re.compile(r",?\s+not\s+(?P<old>[\w@.+-]*\d[\w@.+-]*|[\w.+-]+@[\w.-]+)", _I)
_UNLABELLED = re.compile(
    r"(?:it'?s|it is|is|meant|should be|use|try)\s+(?P<value>[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|[A-Za-z0-9][A-Za-z0-9-]*\d[A-Za-z0-9-]*)",
    _I,
)
_GOAL = re.compile(
    r"\b(?:i(?:'d| would)(?: also| now)? like to|i(?: also| now)? want to|i(?: also| now)? need to"
    r"|i(?:'m| am)(?: also| now)? trying to|i(?:'m| am)(?: also| now| just)? looking (?:for|to)"
    r"|(?:can|could) you(?: also)? help me(?: with| to)?|help me(?: to)?"
    r"|i(?: also| now)? need (?:a|an|some|help with)|i(?:'d| would)(?: also)? like (?:a|an|some))"
    r"\s+(?P<goal>[^.?!\n]{3,120})",
    _I,
)
_SWITCH = re.compile(
    r"\b(?:instead|also|another thing|new question|different question|change of plans"
    r"|now i|next i|one more thing)\b",
    _I,
)
_DEFER = re.compile(
    r"\b(?:let me (?:check|find out|look into)|i(?:'ll| will) (?:check|find out|get back)"
    r"|i(?:'m| am) not sure|i don't know|i need to check|i'll look into)\b",
    _I,
)
_STOP = frozenset(
    "the a an is are was were do does did can could would will i you my your me it this "
    "that what when where how why which who of to for in on at and or with be have has "
    "there any some please".split()
)


def spoken_text(event: Event) -> str:
    """What a message says, without its tool calls (their arguments are not speech)."""
    if event.kind == "tool_call":
        return event_text(replace(event, tool_calls=()))
    return event_text(event)


def _said_fact(change: Change) -> Fact:
    return Fact(
        key=str(change.key), value=str(change.value), seq=change.seq, last_seq=change.seq,
        at=change.at, confidence=change.confidence, source=change.source, role=change.role,
        pinned=False, history=(),
    )  # fmt: skip


def _content(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP and len(w) > 2}


class RuleExtractor:
    """Offline extraction by rules; deterministic, no I/O (see the module docstring)."""

    name = "rules"

    async def extract(
        self, *, events: Sequence[Event], state: Mapping[str, JSONValue]
    ) -> list[Change]:
        return self.changes(events, state)

    def changes(self, events: Sequence[Event], state: Mapping[str, JSONValue]) -> list[Change]:
        """The changes ``events`` (oldest first) make to ``state``, in order."""
        doc = dict(state)
        out: list[Change] = []
        for event in events:
            if event.kind not in ("message", "tool_call") or event.role not in (
                "user",
                "assistant",
            ):
                continue
            found = self.message_changes(
                spoken_text(event),
                role=event.role,
                seq=event.seq,
                at=event.created_at.isoformat(),
                state=doc,
            )
            out += found
            doc = apply_all(doc, found)
        return out

    def message_changes(
        self, text: str, *, role: str, seq: int, at: str | None, state: Mapping[str, JSONValue]
    ) -> list[Change]:
        """The changes one message makes, given the state before it."""
        if role == "user":
            return self._user(text, seq, at, state)
        return self._assistant(text, seq, at, state)

    # -- user ---------------------------------------------------------------------------

    def _user(
        self, text: str, seq: int, at: str | None, state: Mapping[str, JSONValue]
    ) -> list[Change]:
        facts = facts_of(state)
        correcting = bool(_CORRECTION.search(text))
        previous = _NOT_PREVIOUS.search(text)
        out: list[Change] = []
        mentions = fact_mentions(text, role="user")
        if previous is not None:  # "48231, not 48213": the old value is no new fact
            old = previous.group("old").lower()
            mentions = [m for m in mentions if m.value.lower() != old]
        for mention in mentions:
            out.append(self._fact_change(mention, facts, correcting, previous, seq, at))
        if correcting and not any(c.op == "correct_fact" for c in out):
            # the value corrected may have been given earlier in this very message
            said = {c.key: replace(facts[c.key], value=str(c.value)) if c.key in facts else
                    _said_fact(c) for c in out if c.key}  # fmt: skip
            candidates = {**facts, **said}
            out += self._unlabelled_correction(text, candidates, mentions, previous, seq, at)
        for n, text_ in enumerate(constraints(text), start=1):
            cid = f"c{seq}" if n == 1 else f"c{seq}-{n}"
            out.append(
                Change(
                    "add_commitment",
                    key=cid,
                    value=text_,
                    topic="constraint",
                    status="active",
                    seq=seq,
                    at=at,
                    source="rules",
                    role="user",
                    confidence=0.7,
                )
            )
        goal = _GOAL.search(text)
        if goal and (not state.get("goal") or _SWITCH.search(text)):
            value = goal.group(0).strip()
            out.append(
                Change(
                    "set_goal",
                    value=value[0].upper() + value[1:],
                    seq=seq,
                    at=at,
                    source="rules",
                    role="user",
                    confidence=0.6,
                )
            )
        asked = [s for s in sentences(text) if s.endswith("?") and len(words(s)) >= 3]
        if asked:
            question = " ".join(asked)[:300]
            out.append(
                Change(
                    "add_question",
                    key=f"q{seq}",
                    value=question,
                    seq=seq,
                    at=at,
                    source="rules",
                    role="user",
                    confidence=0.6,
                )
            )
        return out

    @staticmethod
    def _fact_change(
        mention: Mention,
        facts: Mapping[str, Fact],
        correcting: bool,
        previous: re.Match[str] | None,
        seq: int,
        at: str | None,
    ) -> Change:
        known = mention.key in facts
        op: Op = "correct_fact" if correcting and (known or previous) else "set_fact"
        return Change(
            op,
            key=mention.key,
            value=mention.value,
            seq=seq,
            at=at,
            source="rules",
            role="user",
            confidence=mention.confidence,
            previous=previous.group("old") if previous and op == "correct_fact" else None,
        )

    @staticmethod
    def _unlabelled_correction(
        text: str,
        current: Mapping[str, Fact],
        mentions: list[Mention],
        previous: re.Match[str] | None,
        seq: int,
        at: str | None,
    ) -> list[Change]:
        """``actually it's NW-48231``: file the value on the fact it most resembles."""
        taken = {m.value.lower() for m in mentions} - {f.value.lower() for f in current.values()}
        for match in _UNLABELLED.finditer(text):
            value = match.group("value").rstrip(".")
            if value.lower() in taken or (
                previous and value.lower() == previous.group("old").lower()
            ):
                continue
            best, score = None, 0.0
            for key, fact in current.items():
                if normalise_value(fact.value) == normalise_value(value):
                    continue  # the value itself, not a correction of it
                if previous and normalise_value(fact.value) == normalise_value(
                    previous.group("old")
                ):
                    best, score = key, 1.0
                    break
                ratio = difflib.SequenceMatcher(None, fact.value.lower(), value.lower()).ratio()
                same_kind = ("@" in fact.value) == ("@" in value)
                if same_kind and ratio > score:
                    best, score = key, ratio
            if best is not None and score >= 0.6:
                old = previous.group("old") if previous else None
                return [
                    Change(
                        "correct_fact",
                        key=best,
                        value=value,
                        seq=seq,
                        at=at,
                        source="rules",
                        role="user",
                        confidence=0.7,
                        previous=old,
                    )
                ]
        return []

    # -- assistant ----------------------------------------------------------------------

    def _assistant(
        self, text: str, seq: int, at: str | None, state: Mapping[str, JSONValue]
    ) -> list[Change]:
        facts = facts_of(state)
        commitments = [c for c in commitments_of(state) if c.role != "user"]
        out: list[Change] = []
        for mention in fact_mentions(text, role="assistant"):
            fact = facts.get(mention.key)
            if fact is None or fact.role == "assistant":
                out.append(
                    Change(
                        "set_fact",
                        key=mention.key,
                        value=mention.value,
                        seq=seq,
                        at=at,
                        source="rules",
                        role="assistant",
                        confidence=mention.confidence,
                    )
                )
        reversed_topics = set()
        for topic, _sentence in reversals(text):
            for c in commitments:
                if c.topic == topic and c.status != "revoked":
                    out.append(
                        Change(
                            "set_commitment",
                            key=c.id,
                            status="revoked",
                            seq=seq,
                            at=at,
                            source="rules",
                            role="assistant",
                        )
                    )
                    reversed_topics.add(topic)
        n = 0
        for promise in promises(text):
            if promise.topic in reversed_topics:
                continue
            pending = [c for c in commitments if c.topic == promise.topic and c.status == "active"]
            if promise.status == "fulfilled" and pending and promise.topic is not None:
                for c in pending:
                    out.append(
                        Change(
                            "set_commitment",
                            key=c.id,
                            value=promise.text,
                            status="fulfilled",
                            seq=seq,
                            at=at,
                            source="rules",
                            role="assistant",
                        )
                    )
                continue
            n += 1
            cid = f"c{seq}" if n == 1 else f"c{seq}-{n}"
            out.append(
                Change(
                    "add_commitment",
                    key=cid,
                    value=promise.text,
                    topic=promise.topic,
                    status=promise.status,
                    seq=seq,
                    at=at,
                    source="rules",
                    role="assistant",
                    confidence=0.8,
                )
            )
        out += self._answered(text, seq, at, state)
        return out

    @staticmethod
    def _answered(
        text: str, seq: int, at: str | None, state: Mapping[str, JSONValue]
    ) -> list[Change]:
        """Open questions this reply answers: the newest ones unless it defers or only asks
        back; older ones when it shares most of their content words."""
        raw = state.get("open_questions")
        questions = [q for q in raw if isinstance(q, dict)] if isinstance(raw, list) else []
        if not questions or _DEFER.search(text):
            return []
        only_asks = text.rstrip().endswith("?") and len(words(text)) < 25
        seqs = [q.get("seq") for q in questions]
        newest = max((s for s in seqs if isinstance(s, int)), default=0)
        said = _content(text) | id_tokens(text)
        out: list[Change] = []
        for q in questions:
            qid, qtext = q.get("id"), q.get("text")
            if not isinstance(qid, str) or not isinstance(qtext, str):
                continue
            asked = _content(qtext)
            overlap = len(asked & said) / len(asked) if asked else 0.0
            if (q.get("seq") == newest and not only_asks) or overlap >= 0.5:
                out.append(
                    Change(
                        "resolve_question",
                        key=qid,
                        seq=seq,
                        at=at,
                        source="rules",
                        role="assistant",
                    )
                )
        return out
