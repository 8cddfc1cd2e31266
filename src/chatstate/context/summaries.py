"""Summarisers: fold the previous summary and a newly aged span of events into a new one.

One interface; an offline extractive summariser is the default and an LLM summariser
calls any OpenAI-compatible endpoint. The context engine calls a summariser off the
request path and stores the result as a ``summary`` event whose ``data`` says which seqs
it covers; until it exists, the previous summary is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from chatstate.model import Event

__all__ = ["Summariser"]


@runtime_checkable
class Summariser(Protocol):
    async def summarise(
        self, *, previous: str | None, events: Sequence[Event], max_tokens: int
    ) -> str:
        """A summary of ``previous`` (the summary of everything before ``events``) plus
        ``events``, of at most about ``max_tokens`` tokens.

        Facts (names, numbers, ids, dates, amounts, decisions, promises) must be carried
        forward from ``previous``, never dropped for brevity: a summary that loses early
        facts after a few rounds is the failure this exists to prevent.
        """
        ...
