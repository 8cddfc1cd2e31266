"""Evidence recall, and the baselines it is compared with. Pure: values in, values out.

An evidence turn (an utterance the data set names as holding a question's answer) is
**present** in a built context by one of three routes, checked in this order:

1. ``verbatim``: its seq is among the manifest's recent messages sent as they are;
2. ``retrieved``: its seq is among the manifest's retrieved messages; one sent cut to
   some of its sentences (``RetrievedTurn.cut``) counts only when its key facts are in
   what was sent, by the rule of route 3 applied to its line;
3. ``summary``: its **key facts are present** in the summary or pinned-state text that
   the context actually holds (after any cut to the section's share), by this rule:

   * the *content terms* of a text are its lowercase runs of letters and digits, less
     the stop words of :data:`chatstate.context.bm25.DEFAULT_STOP_WORDS`, less words of
     one or two letters (numbers of any length are kept);
   * the turn's *key sentences* are its sentences (split at ``.!?`` and line ends) that
     have two content terms or more and share a content term with the question's answer;
     when none does (the answer is inferred, or unknown), every such sentence is key;
   * a key sentence is *restated* when one single line of the summary or state holds at
     least :data:`RESTATED_SHARE` (80%) of its content terms and every number among them;
   * the key facts are present when every key sentence is restated and, for the summary,
     the turn lies within the seqs the summary says it covers.

   Conservative on purpose: terms must gather on one line (not be collected across a
   long summary), paraphrase does not count, and a sentence cut to its facts' neighbours
   by a tight summary usually falls under 80% and does not count either.

Anything else is ``missing``. Recall is the share of evidence turns present, counted
over all (question, evidence turn) pairs.

Baselines, for the same question at the same point and budget (``avail`` = the budget
less the question and the reply's priming): **full history** (every message; recall 1 by
construction, its tokens are the cost), **front truncation** (the newest messages that
fit in ``avail``, whole: what a provider's silent truncation keeps), and a **sliding
window** (the newest ``N`` turns, ``N`` fixed per conversation as ``avail`` over the
median turn's tokens, then cut to whole turns that fit ``avail``).
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from chatstate.context.bm25 import DEFAULT_STOP_WORDS
from chatstate.context.manifest import Manifest
from chatstate.model import JSONValue

__all__ = [
    "RESTATED_SHARE",
    "Route",
    "Window",
    "content_terms",
    "facts_present",
    "front_truncation",
    "key_sentences",
    "retrieved_text",
    "route_of",
    "sliding_window",
    "summary_text",
    "turn_starts",
    "window_turns",
]

Route = Literal["verbatim", "retrieved", "summary", "missing"]
RESTATED_SHARE = 0.8
_TERM = re.compile(r"[^\W_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# The labels assemble() puts at the head of the summary and pinned-state messages.
_SUMMARY_LABEL = "Summary of the conversation up to message"
_STATE_LABEL = "Session state:"
_RETRIEVED_LABEL = "Earlier messages relevant to the current one:"


def content_terms(text: str) -> list[str]:
    """Lowercase letter/digit runs, less stop words and words under three letters."""
    out = []
    for term in _TERM.findall(text.lower()):
        if term.isdigit() or (len(term) >= 3 and term not in DEFAULT_STOP_WORDS):
            out.append(term)
    return out


def key_sentences(said: str, answer: str | None) -> list[set[str]]:
    """The content terms of each key sentence of a turn (see the module docstring)."""
    sentences = [set(content_terms(s)) for s in _SENTENCE.split(said)]
    sentences = [s for s in sentences if len(s) >= 2]
    if not sentences:
        whole = set(content_terms(said))
        return [whole] if whole else []
    wanted = set(content_terms(answer)) if answer else set()
    keyed = [s for s in sentences if s & wanted]
    return keyed or sentences


def _restated(terms: set[str], lines: Sequence[set[str]]) -> bool:
    numbers = {t for t in terms if t.isdigit()}
    need = RESTATED_SHARE * len(terms)
    return any(numbers <= line and len(terms & line) >= need for line in lines)


def facts_present(said: str, answer: str | None, text: str) -> bool:
    """Whether the key facts of a turn that said ``said`` are restated in ``text``."""
    keys = key_sentences(said, answer)
    if not keys or not text:
        return False
    lines = [set(content_terms(line)) for line in text.splitlines() if line.strip()]
    return all(_restated(k, lines) for k in keys)


def summary_text(messages: Sequence[dict[str, JSONValue]]) -> tuple[str, str]:
    """The summary and the pinned-state text a built context holds (``""`` when none)."""
    summary = state = ""
    for message in messages:
        content = message.get("content")
        if message.get("role") != "system" or not isinstance(content, str):
            continue
        if content.startswith(_SUMMARY_LABEL):
            summary = content
        elif content.startswith(_STATE_LABEL):
            state = content
    return summary, state


def retrieved_text(messages: Sequence[dict[str, JSONValue]]) -> str:
    """The retrieved section's text in a built context (``""`` when none)."""
    for message in messages:
        content = message.get("content")
        is_system = message.get("role") == "system" and isinstance(content, str)
        if is_system and str(content).startswith(_RETRIEVED_LABEL):
            return str(content)
    return ""


def _line_of(seq: int, retrieved: str) -> str:
    head = f"[#{seq}] "
    return next((line for line in retrieved.splitlines() if line.startswith(head)), "")


def route_of(
    seq: int,
    said: str,
    answer: str | None,
    manifest: Manifest,
    summary: str,
    state: str,
    retrieved: str = "",
) -> Route:
    """How the evidence turn at ``seq`` reached the context, or ``missing``.

    ``retrieved`` is the retrieved section's text (:func:`retrieved_text`), needed to
    check a message that was sent cut to some of its sentences."""
    if seq in manifest.verbatim:
        return "verbatim"
    for r in manifest.retrieved:
        if seq in r.seqs:
            if seq not in r.cut or facts_present(said, answer, _line_of(seq, retrieved)):
                return "retrieved"
            break
    covered = manifest.summary is not None and manifest.summary.to_seq >= seq
    if (covered and facts_present(said, answer, summary)) or facts_present(said, answer, state):
        return "summary"
    return "missing"


@dataclass(frozen=True, slots=True)
class Window:
    kept_from: int
    """Index of the oldest message kept (``len(costs)`` when none fits)."""
    tokens: int
    """Tokens of the messages kept."""


def front_truncation(costs: Sequence[int], avail: int) -> Window:
    """The newest whole messages whose ``costs`` fit in ``avail``."""
    spent, index = 0, len(costs)
    while index > 0 and spent + costs[index - 1] <= avail:
        index -= 1
        spent += costs[index]
    return Window(index, spent)


def turn_starts(roles: Sequence[str]) -> list[int]:
    """Index of each turn's first message: a turn starts at a user message."""
    return [i for i, role in enumerate(roles) if i == 0 or role == "user"]


def window_turns(costs: Sequence[int], starts: Sequence[int], avail: int) -> int:
    """``N`` for the sliding window: ``avail`` over the median turn's tokens, at least 1."""
    bounds = [*starts, len(costs)]
    sizes = [sum(costs[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return max(1, int(avail // statistics.median(sizes))) if sizes else 1


def sliding_window(costs: Sequence[int], starts: Sequence[int], n: int, avail: int) -> Window:
    """The newest ``n`` turns, less their oldest whole turns while over ``avail``."""
    first = list(starts[-n:]) if starts else []
    spent = sum(costs[first[0] :]) if first else 0
    while first and spent > avail:
        end = first[1] if len(first) > 1 else len(costs)
        spent -= sum(costs[first[0] : end])
        first.pop(0)
    return Window(first[0] if first else len(costs), spent)
