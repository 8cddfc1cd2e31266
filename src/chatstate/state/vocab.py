"""The words the offline extractor and the health detectors share. Pure data and regexes.

One vocabulary maps what people call a thing ("acct no.", "e-mail address", "zip") to a
fact key (``account_number``, ``email``, ``postcode``), so that a value the user gave and
a question the assistant asks later land on the same key. Commitment *topics* (refund,
escalation, booking, ...) are shared the same way between the extractor, which files a
promise under a topic, and the contradiction detector, which looks for the topic denied.
"""

from __future__ import annotations

import re

__all__ = [
    "ID_LABELS",
    "PERSONAL_LABELS",
    "TOPICS",
    "key_for_label",
    "sentences",
    "topic_of",
    "words",
]

_I = re.IGNORECASE

ID_LABELS: dict[str, str] = {
    "account": "account_number",
    "acct": "account_number",
    "order": "order_number",
    "ticket": "ticket_number",
    "case": "case_number",
    "booking": "booking_reference",
    "reservation": "reservation_number",
    "confirmation": "confirmation_number",
    "reference": "reference_number",
    "ref": "reference_number",
    "policy": "policy_number",
    "claim": "claim_number",
    "member": "member_id",
    "membership": "member_id",
    "customer": "customer_id",
    "invoice": "invoice_number",
    "tracking": "tracking_number",
    "serial": "serial_number",
    "flight": "flight_number",
    "passport": "passport_number",
    "meter": "meter_number",
    "loyalty": "loyalty_number",
    "subscription": "subscription_id",
    "employee": "employee_id",
    "student": "student_id",
    "patient": "patient_id",
    "license": "license_number",
    "licence": "license_number",
    "iban": "iban",
    "imei": "imei",
    "vin": "vin",
    "rma": "return_number",
    "transaction": "transaction_id",
}
"""Labels that name an identifier (``order NW-48213``, ``account number 48213``)."""

PERSONAL_LABELS: dict[str, str] = {
    "name": "name",
    "full name": "name",
    "first name": "first_name",
    "last name": "last_name",
    "surname": "last_name",
    "email": "email",
    "email address": "email",
    "e-mail": "email",
    "e-mail address": "email",
    "phone": "phone",
    "phone number": "phone",
    "telephone number": "phone",
    "mobile": "phone",
    "mobile number": "phone",
    "cell": "phone",
    "cell number": "phone",
    "contact number": "phone",
    "callback number": "phone",
    "number": "phone",
    "address": "address",
    "home address": "address",
    "street address": "address",
    "shipping address": "shipping_address",
    "delivery address": "shipping_address",
    "billing address": "billing_address",
    "zip": "postcode",
    "zip code": "postcode",
    "zipcode": "postcode",
    "postcode": "postcode",
    "post code": "postcode",
    "postal code": "postcode",
    "birthday": "date_of_birth",
    "date of birth": "date_of_birth",
    "dob": "date_of_birth",
    "username": "username",
    "user name": "username",
    "login": "username",
    "user id": "user_id",
    "budget": "budget",
    "company": "company",
    "employer": "company",
    "city": "city",
    "country": "country",
    "time zone": "timezone",
    "timezone": "timezone",
    "preferred language": "language",
    "language": "language",
    "card": "card_last4",
}
"""Labels of personal details (``my email is ...``, ``what is your zip code?``)."""

_BOOKING_LABELS: dict[str, str] = {
    "people": "party_size",
    "guests": "party_size",
    "party size": "party_size",
    "nights": "nights",
    "day": "day",
    "date": "day",
    "time": "time",
    "arrival time": "arrive_by",
    "departure time": "leave_at",
}

_ID_NOUN = r"(?:\s+(?:number|no\.?|num|id|code|#))"


def _label_table() -> dict[str, str]:
    table = dict(PERSONAL_LABELS)
    table.update(_BOOKING_LABELS)
    for label, key in ID_LABELS.items():
        for noun in ("number", "no", "no.", "num", "id", "code", "#"):
            table[f"{label} {noun}"] = key
        table.setdefault(label, key)
    table["reference"] = "reference_number"
    return table


LABELS: dict[str, str] = _label_table()
"""Every label phrase, lower case, to its fact key."""

_LABEL_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(p) for p in sorted(LABELS, key=len, reverse=True)) + r")(?!\w)",
    _I,
)


def key_for_label(text: str) -> str | None:
    """The fact key named at the start of ``text`` (``"account no. please"`` ->
    ``account_number``), or ``None``."""
    match = _LABEL_RE.match(text.strip())
    return LABELS[match.group(0).lower()] if match else None


TOPICS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, _I)
    for name, pattern in {
        "refund": r"\brefund\w*|\bmoney back\b|\breimburse\w*",
        "replacement": r"\breplac\w*|\bexchang\w*",
        "escalation": r"\bescalat\w*|\bsupervisor\b|\bspecialist team\b",
        "cancellation": r"\bcancel\w*",
        "booking": r"\bbook(?:ed|ing|ings)?\b|\breserv\w*",
        "callback": r"\bcall(?:ing)? you back\b|\bcall ?back\b|\bget back to you\b"
        r"|\bcontact you\b|\breach out to you\b",
        "credit": r"\bcredit(?:ed)?\b|\bdiscount\w*|\bvoucher\w*|\bcoupon\w*|\bwaiv\w*",
        "appointment": r"\bappointment\w*|\bschedul\w*|\btechnician\b|\bvisit\b",
        "ticket": r"\bticket\b|\bcase\b",
        "email": r"\be-?mail\w*|\bconfirmation\b",
        "shipment": r"\bship\w*|\bdispatch\w*|\bdeliver\w*|\bpackage\b|\bparcel\b",
    }.items()
}
"""Commitment topics, most specific first."""

_VERB_TOPICS: dict[str, str] = {
    "refund": "refund",
    "escalat": "escalation",
    "cancel": "cancellation",
    "book": "booking",
    "reserv": "booking",
    "replac": "replacement",
    "schedul": "appointment",
    "credit": "credit",
    "waiv": "credit",
    "ship": "shipment",
    "email": "email",
    "e-mail": "email",
}


_GENERIC_TOPICS = ("appointment", "ticket", "email", "shipment")


def topic_of(sentence: str, verb: str | None = None) -> str | None:
    """The commitment topic a sentence is about: a specific topic word (refund,
    replacement, ...), else the verb's own topic (``escalated`` -> escalation), else a
    generic topic word (ticket, email, shipment)."""
    for name, pattern in TOPICS.items():
        if name not in _GENERIC_TOPICS and pattern.search(sentence):
            return name
    if verb:
        lowered = verb.lower()
        for stem, topic in _VERB_TOPICS.items():
            if lowered.startswith(stem):
                return topic
    for name in _GENERIC_TOPICS:
        if TOPICS[name].search(sentence):
            return name
    return None


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences (on ``. ! ?`` followed by space, and on newlines)."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s and s.strip()]


def words(text: str) -> list[str]:
    """Lower-case words and numbers of ``text``."""
    return _WORD.findall(text.lower())
