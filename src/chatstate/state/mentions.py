"""Fact mentions in one message: identifiers, contact details, "my X is Y", bookings. Pure.

:func:`fact_mentions` finds, in order of trust:

* labelled identifiers: ``order NW-48213``, ``account number: 48213``, ``ticket #5521``
  (the value must hold a digit);
* e-mail addresses; phone numbers next to a phone word (``call``, ``mobile``, ...) or
  written with ``+``/brackets;
* ``my X is Y`` for known labels (``my zip code is 94110``) and for labels ending in a
  noun such as *name*, *number*, *address* when ``Y`` holds a digit, an ``@`` or a
  capital; ``call me Y``;
* amounts with a currency, keyed by the word before them (refund, charged, budget);
* bookings: party size (``for 6 people``), nights, weekday, clock times.

User messages give all of these. Assistant messages give only identifiers the assistant
issues (reference, ticket, case, tracking, confirmation numbers): an assistant repeating
the user's order number is not a new fact, and a different one is a contradiction for
the health detectors to judge, not an update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatstate.state.vocab import ID_LABELS, LABELS

__all__ = ["ISSUED_KEYS", "Mention", "fact_mentions", "id_tokens"]

_I = re.IGNORECASE

ISSUED_KEYS = frozenset(
    {
        "reference_number",
        "booking_reference",
        "confirmation_number",
        "ticket_number",
        "case_number",
        "tracking_number",
        "claim_number",
        "return_number",
        "reservation_number",
    }
)


@dataclass(frozen=True, slots=True)
class Mention:
    key: str
    value: str
    start: int
    end: int
    labelled: bool
    """The speaker named what the value is (not guessed from its shape)."""
    confidence: float


_ID = re.compile(
    r"\b(?P<label>" + "|".join(sorted(ID_LABELS, key=len, reverse=True)) + r")"
    r"(?P<noun>\s+(?:number|no\.?|num|id|code|reference|ref)|\s*#)?"
    r"(?:\s*(?:is|was|:|=|reads|should be|of))*\s*[:#]?\s*"
    r"(?P<value>[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]|\d)(?![\w@-])",
    _I,
)
_UNIT_AFTER = re.compile(
    r"\s*(?:%|people|persons|guests|nights?|days?|items?|pieces?|hours?|minutes?|am\b|pm\b"
    r"|years?|months?|weeks?|units?|times)",
    _I,
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(
    r"(?<![\w-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){0,4}(?![\w-])"
)
_PHONE_CUE = re.compile(
    r"\b(?:phone|mobile|cell|call|text|reach|tel|telephone|whatsapp|sms|number)\b", _I
)
_MY = re.compile(
    r"\bmy\s+(?P<label>[a-z][a-z#. -]{0,30}?)\s+(?:is|was|'s|is now|has changed to|changed to)"
    r"\s+(?P<value>[^;!?\n]{1,80})",
    _I,
)
_VALUE_END = re.compile(
    r",\s|\.(?:\s|$)|\s+(?:and|but|so|because|which|if|though|although|since|please|thanks)\b",
    _I,
)
_MODIFIER = re.compile(
    r"^(?:new|current|updated|correct|actual|real|primary|main|preferred)\s+", _I
)
_GENERIC_NOUNS = frozenset(
    "name number id code address email date city country plan model size budget language "
    "username color colour handle team department role title school company".split()
)
_PERSONAL_ID = re.compile(
    r"\b(?P<label>zip(?: ?code)?|post ?code|postal code|date of birth|dob|birthday)"
    r"(?:\s*(?:is|:|=))?\s+(?P<value>[A-Za-z0-9][A-Za-z0-9/.-]*(?: [A-Za-z0-9/.-]+){0,2})",
    _I,
)
_CALL_ME = re.compile(
    r"\b(?:call me|i go by|you can call me)\s+(?!at\b|back\b|on\b|later\b|when\b|if\b|asap\b)"
    r"(?P<value>[A-Z][\w'-]+)"
)
_AMOUNT = re.compile(
    r"(?P<cur>[$€£¥])\s?(?P<num>\d[\d,]*(?:\.\d{1,2})?)"
    r"|(?P<num2>\d[\d,]*(?:\.\d{1,2})?)\s?(?P<cur2>dollars|euros?|pounds|gbp|usd|eur)\b",
    _I,
)
_AMOUNT_KEYS = (
    (re.compile(r"refund|reimburs", _I), "refund_amount"),
    (re.compile(r"charg|bill|paid|payment|debited|overcharg", _I), "charged_amount"),
    (re.compile(r"budget|under|below|up to|no more than|at most|max|afford|spend", _I), "budget"),
    (re.compile(r"price|cost|fee", _I), "price"),
)
_NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_N = r"(?P<n>\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")"
_PARTY = re.compile(
    r"\b(?:(?:table|party|group|booking|reservation|tickets?) (?:for|of)\s+"
    + _N
    + r"\b|"
    + _N.replace("<n>", "<m>")
    + r"\s+(?:people|persons|guests|adults|passengers|of us|tickets?|seats?)\b)",
    _I,
)
_NIGHTS = re.compile(_N + r"\s+nights?\b", _I)
_WEEKDAY = re.compile(r"\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b", _I)
_TIME = re.compile(
    r"\b(?P<prep>at|by|after|before|around)\s+(?P<t>\d{1,2}[:.]\d{2}|\d{1,2}\s?[ap]m)\b", _I
)


def id_tokens(text: str) -> set[str]:
    """Tokens that look like identifiers (letters/digits/dashes holding a digit, at least
    three characters) or e-mail addresses, lower case."""
    found = {m.group(0).lower() for m in _EMAIL.finditer(text)}
    for token in re.findall(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]", text):
        if any(c.isdigit() for c in token) and len(token) >= 3:
            found.add(token.lower())
    return found


def _cut_value(raw: str) -> str:
    match = _VALUE_END.search(raw)
    value = raw[: match.start()] if match else raw
    return value.strip().strip("\"'").rstrip(".")


def _accept_my(key: str | None, label: str, value: str) -> tuple[str, str] | None:
    """(key, value) for ``my <label> is <value>`` or ``None`` when it is not a fact."""
    low = value.lower()
    if not value or low.startswith(("not ", "the same", "a ", "an ", "very ", "too ", "also")):
        return None
    has_digit = any(c.isdigit() for c in value)
    if key is None:
        words = label.lower().split()
        if len(words) > 3 or words[-1] not in _GENERIC_NOUNS:
            return None
        if not (has_digit or "@" in value or value[:1].isupper()):
            return None
        key = "_".join(re.sub(r"[^a-z0-9]", "", w) for w in words)
    if key == "email" and "@" not in value:
        return None
    if key == "phone" and sum(c.isdigit() for c in value) < 7:
        return None
    if key in ("name", "first_name", "last_name"):
        name = re.match(r"[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*){0,3}", value)
        return (key, name.group(0)) if name else None
    if key.endswith(("_number", "_id", "postcode")) and not has_digit:
        return None
    return key, value


class _Found:
    """Mentions found so far; a later rule never claims text an earlier one took."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[Mention] = []
        self._taken: list[tuple[int, int]] = []

    def add(
        self, key: str, value: str, span: tuple[int, int], *, labelled: bool, conf: float
    ) -> None:
        start, end = span
        if all(end <= a or start >= b for a, b in self._taken):
            self.items.append(Mention(key, value, start, end, labelled, conf))
            self._taken.append((start, end))

    def identifiers(self, role: str) -> None:
        for m in _ID.finditer(self.text):
            value = m.group("value").strip("-")
            key = ID_LABELS[m.group("label").lower()]
            short = len(value) < 4 and not m.group("noun")
            if (
                short
                or not any(c.isdigit() for c in value)
                or _UNIT_AFTER.match(self.text, m.end())
            ):
                continue
            if role == "assistant" and key not in ISSUED_KEYS:
                continue
            self.add(key, value, m.span("value"), labelled=True, conf=0.9)

    def personal(self) -> None:
        text = self.text
        for m in _EMAIL.finditer(text):
            self.add("email", m.group(0), m.span(), labelled=False, conf=0.95)
        for m in _PERSONAL_ID.finditer(text):
            value = _cut_value(m.group("value"))
            value = " ".join(w for w in value.split() if any(c.isdigit() for c in w) or w.isupper())
            key = LABELS.get(m.group("label").lower().replace("zipcode", "zip code"), "postcode")
            if value and any(c.isdigit() for c in value):
                start = m.start("value")
                self.add(key, value, (start, start + len(value)), labelled=True, conf=0.85)
        for m in _MY.finditer(text):
            label = _MODIFIER.sub("", m.group("label").strip().rstrip("."))
            if label.lower().startswith(("old ", "previous ", "former ")):
                continue
            value = _cut_value(m.group("value"))
            accepted = _accept_my(LABELS.get(label.lower()), label, value)
            if accepted is not None and accepted[0] not in ID_LABELS.values():
                start = m.start("value")
                self.add(*accepted, (start, start + len(value)), labelled=True, conf=0.85)
        for m in _CALL_ME.finditer(text):
            self.add("preferred_name", m.group("value"), m.span(), labelled=True, conf=0.8)

    def amounts_and_times(self) -> None:
        text = self.text
        for m in _AMOUNT.finditer(text):
            before = text[max(0, m.start() - 40) : m.start()]
            key = next((k for p, k in _AMOUNT_KEYS if p.search(before)), "amount")
            self.add(key, m.group(0).strip(), m.span(), labelled=False, conf=0.7)
        for m in _TIME.finditer(text):
            before = text[max(0, m.start() - 25) : m.start()].lower()
            key = "arrive_by" if "arriv" in before else "time"
            key = "leave_at" if re.search(r"leav|depart", before) else key
            self.add(key, m.group("t"), m.span("t"), labelled=False, conf=0.6)

    def bookings(self) -> None:
        text = self.text
        for m in _PARTY.finditer(text):
            n = m.group("n") or m.group("m")
            self.add(
                "party_size", _NUMBER_WORDS.get(n.lower(), n), m.span(), labelled=True, conf=0.8
            )
        for m in _NIGHTS.finditer(text):
            n = m.group("n")
            self.add("nights", _NUMBER_WORDS.get(n.lower(), n), m.span(), labelled=True, conf=0.8)
        days = {d.lower() for d in _WEEKDAY.findall(text)}
        first = _WEEKDAY.search(text)
        if len(days) == 1 and first is not None:
            self.add("day", first.group(1).lower(), first.span(), labelled=False, conf=0.6)

    def phones(self) -> None:
        for m in _PHONE.finditer(self.text):
            digits = sum(c.isdigit() for c in m.group(0))
            around = self.text[max(0, m.start() - 60) : m.end() + 10]
            shaped = m.group(0).startswith(("+", "("))
            if 7 <= digits <= 15 and (shaped or _PHONE_CUE.search(around)):
                self.add("phone", m.group(0).strip(), m.span(), labelled=False, conf=0.75)


def fact_mentions(text: str, *, role: str) -> list[Mention]:
    """The facts ``text`` states, in order of position (see the module docstring)."""
    found = _Found(text)
    found.identifiers(role)
    if role == "user":
        found.personal()
        found.amounts_and_times()
        found.bookings()
        found.phones()
    return sorted(found.items, key=lambda f: f.start)
