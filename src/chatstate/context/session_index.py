"""The context engine's retrieval index per branch, and the cache that bounds them all.

:class:`SessionIndex` holds one branch's retriever (a document per chat message, its seq
the id, its own text, in order: the engine's BM25 counts the previous message's words too,
so a reply is found by the words of the question it answers) and the indexed messages
themselves, so hits and their neighbours cost no read. It is kept incrementally: each
build indexes only the messages newer than :attr:`SessionIndex.upto`. Everything here is
pure bookkeeping; reading the log and calling a blocking retriever off the event loop
stay in the engine.

:class:`IndexCache` bounds the memory of a worker: at most ``max_sessions`` indexes and
at most ``max_bytes`` of estimated footprint (:func:`footprint`) over all of them. When
either is exceeded, the least recently used indexes are dropped, never the one in use; a
dropped index is rebuilt from the log by its branch's next build (a cold build, which
reads the history once). A single branch larger than ``max_bytes`` is still indexed (its
build needs it) but is the first to go once another branch is used.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chatstate.context.excerpts import line_cost
from chatstate.context.queries import date_mark
from chatstate.context.retrieval import Retriever
from chatstate.context.text import event_text
from chatstate.context.turns import Turn, message_tokens
from chatstate.model import Event

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_SESSIONS", "IndexCache", "SessionIndex", "footprint"]

Key = tuple[str, str, str]
"""(tenant, session, branch)."""

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""The default ceiling on the indexes one engine holds: 512 MiB of estimated footprint."""
DEFAULT_MAX_SESSIONS = 4096
"""The default ceiling on how many branches' indexes one engine holds. Memory is bounded
by :data:`DEFAULT_MAX_BYTES`; this count only bounds the bookkeeping, so that a worker
serving thousands of short sessions keeps them warm (at 256, a fleet with more active
sessions than that rebuilt an index from the whole history on nearly every build)."""

_CHAT_KINDS = frozenset({"message", "tool_call", "tool_result"})


def footprint(text: str) -> int:
    """Estimated bytes one indexed message costs: the :class:`Event` and its text (held
    for hits), the retriever's postings for its words and the previous message's, the
    bookkeeping per seq. Measured with ``tracemalloc`` (BM25, CPython 3.11): 2,759 bytes
    a message on the bench's 609-character messages and 1,539 on LoCoMo's 135-character
    turns, where this gives 3,027 and 1,605 (it errs high)."""
    return 3 * len(text) + 1200


@dataclass(slots=True)
class SessionIndex:
    """One branch's retrieval index (see the module docstring)."""

    retriever: Retriever
    upto: int = 0
    """Every event at or before this seq has been seen."""
    events: dict[int, Event] = field(default_factory=dict)
    """The indexed messages by seq: hits and their neighbours come from here."""
    order: list[int] = field(default_factory=list)
    """Indexed seqs in increasing order (a hit's neighbours are the seqs beside it)."""
    dates: dict[int, str] = field(default_factory=dict)
    """The date each message was said, from the newest date mark before it."""
    mark: str | None = None
    first_day: str | None = None
    spans_days: bool = False
    size: int = 0
    """Estimated bytes held (:func:`footprint` of each indexed message)."""
    line_counts: dict[int, int] = field(default_factory=dict)
    """Tokens of each indexed message's line in the retrieved section, by seq, counted on
    first use by :meth:`line_tokens` with the tokenizer :attr:`line_counter`."""
    line_counter: str | None = None

    def documents(self, fresh: list[Event]) -> list[tuple[int, str]]:
        """Record the chat messages of ``fresh`` (events newer than :attr:`upto`, oldest
        first) and return the documents the retriever must add for them."""
        docs: list[tuple[int, str]] = []
        for event in fresh:
            if event.kind == "message" and event.role in ("user", "assistant"):
                text = event_text(event)
                if mark := date_mark(text):
                    self.mark = mark
                day = event.created_at.date().isoformat()
                if self.first_day is None:
                    self.first_day = day
                self.spans_days = self.spans_days or day != self.first_day
                self.dates[event.seq] = self.mark or day
            elif event.kind not in _CHAT_KINDS or event.role in ("system", "developer"):
                continue
            text = event_text(event)
            docs.append((event.seq, text))
            self.events[event.seq] = event
            self.order.append(event.seq)
            self.size += footprint(text)
        if fresh:
            self.upto = max(self.upto, fresh[-1].seq)
        return docs

    def line_tokens(
        self, count: Callable[[str], int], counter: str
    ) -> Callable[[Event], int | None]:
        """``event -> tokens of its line`` (:func:`~chatstate.context.excerpts.line_cost`) for
        the messages this index holds, the very objects :meth:`hits` hands out (``None``
        for any other event: a message cut to its sentences), each counted once with
        ``count``, the tokenizer named ``counter``, and kept.

        A build tries each of its hits whole, most of which no longer fit (a hundred
        lines a bench turn); the engine's text memo keeps 8,192 texts, fewer than the
        lines of a long conversation, so without this each try encoded its line again:
        the bench's turn at 10,000 turns spent 12.9 of its 29 ms there (4.7 instead of
        1.0 ms at 1,000 turns with the memo cut to 800 texts)."""
        if counter != self.line_counter:
            self.line_counts.clear()
            self.line_counter = counter
        counts, events = self.line_counts, self.events

        def tokens(event: Event) -> int | None:
            if events.get(event.seq) is not event:
                return None
            known = counts.get(event.seq)
            if known is None:
                known = counts[event.seq] = line_cost(event, count)
            return known

        return tokens

    def hits(
        self, ranked: list[tuple[int, float]], count: Callable[[str], int]
    ) -> tuple[list[tuple[Turn, float]], dict[int, tuple[Event, ...]], dict[int, str]]:
        """The messages of ``ranked`` (seq, score), best first, as one-message turns; the
        messages beside each; the dates of all of them when the conversation spans days
        or carries date marks."""
        out: list[tuple[Turn, float]] = []
        near: dict[int, tuple[Event, ...]] = {}
        events, order = self.events, self.order
        last = len(order) - 1
        for seq, score in ranked:
            event = events.get(seq)
            if event is None:
                continue
            out.append((Turn((event,), message_tokens(event, count)), score))
            i = bisect.bisect_left(order, seq)  # order[i] == seq: it is indexed
            if 0 < i < last:
                near[seq] = (events[order[i - 1]], events[order[i + 1]])
            else:
                near[seq] = tuple(events[order[j]] for j in (i - 1, i + 1) if 0 <= j <= last)
        dates: dict[int, str] = {}
        if self.spans_days or self.mark is not None:
            for seq in {s for s, _ in ranked} | {e.seq for n in near.values() for e in n}:
                if seq in self.dates:
                    dates[seq] = self.dates[seq]
        return out, near, dates


class IndexCache:
    """The indexes of one engine, least recently used first (see the module docstring)."""

    def __init__(
        self, max_sessions: int = DEFAULT_MAX_SESSIONS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_sessions < 1 or max_bytes < 1:
            raise ValueError("max_sessions and max_bytes must be positive")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, SessionIndex] = OrderedDict()
        self._sizes: dict[Key, int] = {}
        """Each index's size when last put: the running total follows its growth."""
        self._total = 0
        self.evicted = 0
        """Indexes dropped to stay within the bounds since the engine started."""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._items))

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def size(self) -> int:
        """Estimated bytes held by every index (as of each one's last :meth:`put`)."""
        return self._total

    def get(self, key: Key) -> SessionIndex | None:
        return self._items.get(key)

    def put(self, key: Key, index: SessionIndex) -> None:
        """Keep ``index`` as the most recently used, then drop the least recently used
        others until both bounds hold again."""
        self._items[key] = index
        self._items.move_to_end(key)
        self._total += index.size - self._sizes.get(key, 0)
        self._sizes[key] = index.size
        while len(self._items) > 1 and (
            len(self._items) > self.max_sessions or self._total > self.max_bytes
        ):
            gone, _ = self._items.popitem(last=False)
            self._total -= self._sizes.pop(gone)
            self.evicted += 1

    def drop(self, tenant_id: str, session_id: str) -> None:
        """Forget every branch of a session (its text must not linger in memory)."""
        for key in [k for k in self._items if k[:2] == (tenant_id, session_id)]:
            del self._items[key]
            self._total -= self._sizes.pop(key)
