"""The extra queries of a multi-hop message, their fusion, and date marks. Pure.

A question that needs two turns ("When did Ann start pottery, and what did she make
first?") scores each turn with only part of its words. :func:`sub_queries` gives the
message's parts as queries of their own: its names (capitalised words past the first),
its time phrases (a month, a weekday, a year, "last week"...), and its clauses (split at
``and``, commas, ``;``) when there are two or more. :func:`fuse` merges the ranked lists
by weighted reciprocal rank, so a message that ranks well for any part comes back.

:func:`date_mark` reads the date a transcript gives a message at its head (``"[8 May,
2023] Ann: ..."``, as imported chat logs and the LoCoMo data carry them): the context
engine dates every later message with it, so retrieved messages show when they were said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["date_mark", "fuse", "sub_queries"]

_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_TIME = re.compile(
    rf"\b(?:(?:{_MONTHS})(?:\s+\d{{1,2}})?(?:,?\s+\d{{4}})?|\d{{1,2}}\s+(?:{_MONTHS})"
    r"(?:,?\s+\d{4})?|(?:19|20)\d\d|monday|tuesday|wednesday|thursday|friday|saturday"
    r"|sunday|yesterday|today|tomorrow|(?:last|next|this)\s+(?:week|month|year|weekend"
    r"|summer|winter|spring|fall|autumn))\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<=\s)(?!I\b)[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")
_POSSESSIVE = re.compile(r"'s?$")
_CLAUSE = re.compile(r",|;|\band\b|\bor\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]{3,}")
_MARK = re.compile(r"^\s*\[([^\]\n]{4,60})\]")
_HAS_DATE = re.compile(rf"(?:19|20)\d\d|\b(?:{_MONTHS})\b", re.IGNORECASE)
_CLOCK = re.compile(
    r"^\s*\d{1,2}(?::\d\d)?\s*(?:am|pm)\b\s*(?:on\s+)?|^\s*\d{1,2}:\d\d\s*(?:on\s+)?",
    re.IGNORECASE,
)
RRF_K = 60


def sub_queries(text: str, *, limit: int = 6) -> list[str]:
    """The names, time phrases and clauses of ``text`` as queries, at most ``limit``;
    none for a message with a single part."""
    out: list[str] = []
    for match in _NAME.finditer(text):
        out.append(_POSSESSIVE.sub("", match.group(0)).strip())
    out += [m.group(0) for m in _TIME.finditer(text)]
    clauses = [c.strip() for c in _CLAUSE.split(text)]
    clauses = [c for c in clauses if len(_WORD.findall(c)) >= 2]
    if len(clauses) >= 2:
        out += clauses
    unique = list(dict.fromkeys(q for q in out if q and q.lower() != text.strip().lower()))
    return unique[:limit]


def fuse(
    ranked: Sequence[tuple[float, Sequence[tuple[int, float]]]], k: int
) -> list[tuple[int, float]]:
    """Weighted reciprocal-rank fusion of ``(weight, hits best first)`` lists: the ``k``
    best ids by ``sum(weight / (60 + rank))``; ties by id, newest first."""
    scores: dict[int, float] = {}
    for weight, hits in ranked:
        for rank, (doc, _) in enumerate(hits):
            scores[doc] = scores.get(doc, 0.0) + weight / (RRF_K + rank + 1)
    best = sorted(scores.items(), key=lambda item: (-item[1], -item[0]))
    return best[:k]


def date_mark(text: str) -> str | None:
    """The date at the head of a message, without its time of day (``"[1:56 pm on 8 May,
    2023] ..."`` gives ``"8 May, 2023"``), or ``None``."""
    match = _MARK.match(text)
    if match is None or not _HAS_DATE.search(match.group(1)):
        return None
    return _CLOCK.sub("", match.group(1)).strip()
