"""Retrieval of older turns relevant to the current message. Pure, in-process indexes.

One interface, two implementations: ``BM25Retriever`` (offline, lexical, the default)
and ``EmbeddingRetriever`` (``[embeddings]`` extra, in ``chatstate.context.embeddings``).
A retriever whose ``add``/``search`` take milliseconds (an embedding model) sets a class
attribute ``blocking = True``; the context engine then runs those calls in a worker
thread so the event loop never stalls. A retriever indexes *documents*: an integer id (the
context engine uses a message's seq) and its text. Indexing is incremental, so the engine
keeps one retriever per active session and feeds it only the messages that are new since
the last turn, one document each, in order: a retriever may use that order (the engine's
BM25, :meth:`BM25Retriever.for_messages`, counts the previous message's words too).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    def add(self, docs: Sequence[tuple[int, str]]) -> None:
        """Index more documents. Ids are new and increasing; re-adding an id is an error."""
        ...

    def search(
        self, query: str, *, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """The ``k`` best ``(id, score)`` for ``query``, best first, skipping ``exclude``.

        Scores are comparable within one call only. Deterministic: equal inputs give equal
        output (ties broken by id, newest first).
        """
        ...

    def __len__(self) -> int: ...
