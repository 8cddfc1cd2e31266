"""How a context's budget is shared: :class:`ContextPolicy`, its presets, and the
message's intent that the value-following split reads. Pure."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from chatstate.context.bm25 import DEFAULT_STOP_WORDS
from chatstate.errors import ValidationError

__all__ = ["PRESETS", "ContextPolicy", "Intent", "intent_of", "parse_policy"]


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """How the budget is shared. Shares are fractions of the whole budget.

    With ``adaptive`` (the default) the shares are caps for a *follow-up* (a short message
    or one that leans on the last turns: the recent window takes most of the budget);
    for a self-contained *question about the past* retrieval may take everything but
    ``recent_min_share``, and the summary and state shrink to a third and a half of
    their shares, the summary to nothing when the retrieved candidates fill that room
    (see :func:`intent_of`). The manifest's ``reasons`` says which applied.
    Named presets: :data:`PRESETS` and :func:`parse_policy`.
    """

    state_share: float = 0.15
    summary_share: float = 0.15
    retrieved_share: float = 0.25
    max_event_share: float = 0.5
    """An event larger than this share of the budget is excluded as oversized."""
    retrieve_k: int = 48
    """Retrieved messages at most (each hit is one message; its neighbours come on top
    when they fit)."""
    adaptive: bool = True
    """Split the budget by what the message needs (see the class docstring)."""
    recent_min_share: float = 0.1
    """The recent window's floor when retrieval takes the budget."""
    neighbours: bool = True
    """Bring back the message before and after a retrieved one when they fit."""
    multi_query: bool = False
    """Also search with the message's names, time phrases and clauses on their own (off by
    default: on LoCoMo it brought back more messages that only share a name)."""
    sentences_after: int = 0
    """Hits ranked past this many are cut to their sentences that share a word with the
    message, so that more of them fit (0: a hit is cut only when it does not fit whole)."""
    fill: float = 1.0
    """Fraction of the budget the context may use (the ``cost`` preset sends less)."""

    def __post_init__(self) -> None:
        shares = (self.state_share, self.summary_share, self.retrieved_share)
        if any(s < 0 for s in shares) or sum(shares) > 0.9:
            raise ValidationError("section shares must be >= 0 and leave 10% for recent turns")
        if not 0 < self.max_event_share <= 1:
            raise ValidationError("max_event_share must be in (0, 1]")
        if not 0 <= self.recent_min_share <= 0.9 or not 0 < self.fill <= 1:
            raise ValidationError("recent_min_share must be in [0, 0.9] and fill in (0, 1]")
        if self.retrieve_k < 0:
            raise ValidationError("retrieve_k must be >= 0")


PRESETS: dict[str, ContextPolicy] = {
    "balanced": ContextPolicy(),
    "recall": ContextPolicy(
        state_share=0.1, summary_share=0.05, retrieve_k=96, recent_min_share=0.08
    ),
    "cost": ContextPolicy(
        state_share=0.1, summary_share=0.1, retrieve_k=16, neighbours=False, fill=0.5
    ),
}
"""``balanced`` is the default; ``recall`` gives retrieval more hits and the summary less;
``cost`` sends at most half the budget, the best hits without their neighbours."""


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _value(key: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        if raw.lower() not in _TRUE + _FALSE:
            raise ValidationError(f"policy: {key} needs true or false, got {raw!r}")
        return raw.lower() in _TRUE
    try:
        return int(raw) if isinstance(default, int) else float(raw)
    except ValueError as exc:
        raise ValidationError(f"policy: {key} needs a number, got {raw!r}") from exc


def parse_policy(text: str) -> ContextPolicy:
    """A policy from ``"preset"``, ``"FIELD=VALUE,..."`` or ``"preset,FIELD=VALUE,..."``
    (:class:`ValidationError` for an unknown preset or field, or a bad value)."""
    fields = {f.name: f.default for f in dataclasses.fields(ContextPolicy)}
    base = ContextPolicy()
    values: dict[str, object] = {}
    for index, item in enumerate(filter(None, (s.strip() for s in text.split(",")))):
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq and index == 0 and key in PRESETS:
            base = PRESETS[key]
            continue
        if key not in fields or not raw:
            raise ValidationError(
                f"policy: expected a preset ({', '.join(PRESETS)}) then FIELD=VALUE "
                f"with FIELD in {', '.join(fields)}; got {item!r}"
            )
        values[key] = _value(key, raw, fields[key])
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


Intent = Literal["past", "follow-up", "recent", "fixed"]
_WORD = re.compile(r"[^\W_]+")
_LEANS = frozenset(
    "and also so then it that this these those they them ok okay yes no sure thanks".split()
)


def intent_of(text: str, *, retrieved: bool) -> tuple[Intent, str]:
    """What the message needs, and why: ``past`` (a self-contained question with two
    content words or more: retrieval first), ``follow-up`` (short, or starting with a
    word that leans on the last turns: ``and``, ``it``, ``so``, ``what about``...: the
    recent window first), ``recent`` (nothing was retrieved)."""
    if not retrieved:
        return "recent", "nothing older was retrieved"
    words = _WORD.findall(text.lower())
    content = [w for w in words if len(w) >= 3 and w not in DEFAULT_STOP_WORDS]
    if len(content) < 2:
        return "follow-up", f"a short message ({len(content)} content words)"
    lead = " ".join(words[:2])
    if words[0] in _LEANS or lead in ("what about", "how about"):
        return "follow-up", f"it opens with {words[0]!r}, leaning on the last turns"
    return "past", f"a self-contained message ({len(content)} content words)"
