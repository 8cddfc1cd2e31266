"""The context engine: reads what one turn needs from the store and assembles it.

Per turn it reads a bounded window (the newest events back to the newest summary, at most
about twice the budget's worth or ``tail_limit`` events) and the state document of the
branch it builds for (each branch keeps its own), so a warm build's cost follows the
window and not the conversation. Retrieval keeps one in-process index per active branch
(:mod:`chatstate.context.session_index`): a document per chat message, holding the
message too, so hits and their neighbours cost no read. The indexes of one engine stay
within ``max_sessions`` (4,096) branches and ``max_index_bytes`` (512 MiB) of estimated
memory, least recently used dropped first; :meth:`ContextEngine.forget` drops a
session's. A *cold* build (the branch's first in this process, or its first after its
index was dropped) needs the branch's history indexed once: the index is not kept in the
store (see docs/benchmarks.md, issue 12). Up to ``cold_inline`` (2,000) events before its
window, the build reads and indexes them itself; past that, it starts a background task
that does (reading pages, indexing 128 messages at a time and yielding to the event loop
between) and goes on without a retrieved section, which the manifest's
``reasons["retrieved"]`` says; the builds after the task has finished retrieve as usual.
So no build reads more than ``cold_inline`` events of history, and a worker that restarts
under long sessions answers their first turns at a warm build's cost (measured in
docs/benchmarks.md, fourth session). The decisions are made by the pure
:func:`assemble`.

Compaction runs off the request path: when turns no longer fit, the engine schedules a
background task that folds the previous summary and the oldest turns into a new
``summary`` event (data: ``from_seq``, ``to_seq``, ``text``). Until it lands, builds use
the previous summary and the manifest reports what was dropped. A failed compaction is
logged at WARNING and counted in :attr:`ContextEngine.stats`; the log is never changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import ParamSpec, TypeVar

from chatstate.context.assemble import (
    AssembledContext,
    ContextPolicy,
    ContextRequest,
    SummaryInput,
    assemble,
    parse_policy,
)
from chatstate.context.manifest import Manifest
from chatstate.context.pairing import check_tool_pairing, needs_pairing_window
from chatstate.context.pinned import render_state
from chatstate.context.queries import fuse, sub_queries
from chatstate.context.retrieval import Retriever
from chatstate.context.session_index import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SESSIONS,
    IndexCache,
    SessionIndex,
)
from chatstate.context.summaries import Summariser
from chatstate.context.text import event_text
from chatstate.context.tokens import counter_for, model_info
from chatstate.context.turns import Turn, group_turns
from chatstate.errors import IdempotencyMismatch, ValidationError
from chatstate.model import AppendResult, Event, JSONValue, NewEvent
from chatstate.store.protocol import Store

__all__ = ["BuiltContext", "ContextEngine"]

log = logging.getLogger(__name__)

Message = dict[str, JSONValue]
_Key = tuple[str, str, str]
_PAGE = 64
"""Events per backward page: small enough for the store's inline read path."""
_CHAT_KINDS = frozenset({"message", "tool_call", "tool_result"})
_K = TypeVar("_K")
_T = TypeVar("_T")
_P = ParamSpec("_P")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class BuiltContext:
    messages: list[Message]
    """What to send to the model, in OpenAI chat format."""
    manifest: Manifest
    compaction_scheduled: bool = False


@dataclass(slots=True)
class EngineStats:
    builds: int = 0
    compactions: int = 0
    compaction_failures: int = 0


def _default_retriever() -> Retriever:
    """BM25, fused with MiniLM when the ``[embeddings]`` extra is installed."""
    from chatstate.context.embeddings import default_retriever  # noqa: PLC0415

    return default_retriever()


def _default_summariser() -> Summariser:
    from chatstate.context.extractive import ExtractiveSummariser  # noqa: PLC0415

    # drop_oldest keeps the summary within its token target: the oldest fact lines give way
    # (the log still holds them for retrieval, the pinned state keeps the key facts).
    return ExtractiveSummariser(overflow="drop_oldest")


class ContextEngine:
    """Builds each turn's input from a :class:`Store` under a token budget."""

    def __init__(
        self,
        store: Store,
        *,
        summariser: Summariser | None = None,
        retriever_factory: Callable[[], Retriever] = _default_retriever,
        policy: ContextPolicy | None = None,
        render: Callable[[Mapping[str, JSONValue]], str] = render_state,
        tail_limit: int = 400,
        compact_to: float = 0.4,
        compact_step: float = 0.25,
        summary_tokens: int = 600,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_index_bytes: int = DEFAULT_MAX_BYTES,
        count_model: str = "gpt-4o",
        auto_compact: bool = True,
        cold_inline: int = 2000,
    ) -> None:
        if not 0 < compact_to < 1 or tail_limit < 10:
            raise ValidationError("compact_to must be in (0, 1) and tail_limit at least 10")
        if cold_inline < 0:
            raise ValidationError("cold_inline must be >= 0")
        self.store = store
        self.summariser = summariser or _default_summariser()
        self.policy = policy or ContextPolicy()
        self.stats = EngineStats()
        self._retriever_factory = retriever_factory
        self._render = render
        self._tail_limit = tail_limit
        self._compact_to = compact_to
        self._compact_step = compact_step
        self._summary_tokens = summary_tokens
        self._max_sessions = max_sessions
        self.count_model = count_model
        self.auto_compact = auto_compact
        """Schedule compaction from ``build`` when turns overflow (off for read-only use)."""
        """Stored token counts are counted with this model's tokenizer."""
        self._indexes = IndexCache(max_sessions, max_index_bytes)
        """The retrieval index of each branch in use, bounded in count and bytes."""
        self._cold_inline = cold_inline
        """Events before the window a cold build indexes itself; more go to the background."""
        self._warming: dict[_Key, asyncio.Task[None]] = {}
        """Background tasks indexing a branch's history (see the module docstring)."""
        self._prefixes: OrderedDict[tuple[str, str, str, str], tuple[str, ...]] = OrderedDict()
        self._tasks: dict[_Key, asyncio.Task[None]] = {}
        self._window_sizes: OrderedDict[_Key, int] = OrderedDict()
        """Events the previous build's window held, per branch: the next first page."""
        self._systems: OrderedDict[_Key, str | None] = OrderedDict()
        """The system prompt (text of a system message at seq 1) per branch, once read:
        the log is append-only, so it is read once per process, not every turn."""
        self._summaries: OrderedDict[_Key, SummaryInput] = OrderedDict()
        """The newest summary seen per branch: found again when the window does not reach it."""
        self._marks: OrderedDict[_Key, tuple[int, datetime]] = OrderedDict()
        """The newest event each branch held at its previous build (seq, time): the
        session's generation, checked on use (see :meth:`_recreated`)."""

    # -- writing ------------------------------------------------------------------------

    async def append(
        self,
        session_id: str,
        events: Sequence[NewEvent],
        *,
        tenant_id: str = "default",
        branch: str = "main",
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
        recent: Sequence[Event] | None = None,
    ) -> AppendResult:
        """``store.append`` with each event's token count filled in (counted once, with
        :attr:`count_model`'s tokenizer), after tool pairing is checked
        (:func:`~chatstate.context.pairing.check_tool_pairing`, 422 naming the call).

        ``recent``: the branch's newest events, oldest first, when the caller has read
        them already (the API routes' pairing window): pairing is checked on them with no
        read. Without it, the newest events are read only when the append holds a tool
        result whose call is not in it; a chat message appended while a call is open is
        then not refused (the routes pass ``recent`` for that)."""
        if recent is None and needs_pairing_window(events):
            recent = await self.store.read_last(
                tenant_id=tenant_id, session_id=session_id, branch=branch, n=_PAGE
            )
        if recent is not None:
            check_tool_pairing(recent, events)
        count = _memo_counter(self.count_model)
        counted = [
            e if e.token_count is not None else replace(e, token_count=count(event_text(e)))
            for e in events
        ]
        return await self.store.append(
            tenant_id=tenant_id,
            session_id=session_id,
            events=counted,
            branch=branch,
            expected_seq=expected_seq,
            idempotency_key=idempotency_key,
        )

    # -- building -----------------------------------------------------------------------

    async def build(
        self,
        session_id: str,
        message: str | NewEvent | None = None,
        *,
        tenant_id: str = "default",
        model: str = "gpt-4o",
        budget: int | None = None,
        branch: str = "main",
        system: str | None = None,
        policy: ContextPolicy | str | None = None,
    ) -> BuiltContext:
        """The messages for the next model call and the manifest that explains them.

        ``message`` is the new user message when it is not in the log yet; without it, a
        user message at the head of the log is taken as the current one. ``budget``
        defaults to the model's window minus its reply reservation. ``policy`` replaces
        the engine's for this build: a :class:`ContextPolicy`, or its text form
        (``"recall"``, ``"cost,retrieve_k=8"``: see :func:`parse_policy`;
        :class:`ValidationError` when it does not parse).
        """
        if isinstance(policy, str):
            policy = parse_policy(policy)
        policy = policy or self.policy
        info = model_info(model)
        budget = info.window - info.max_output if budget is None else budget
        key = (tenant_id, session_id, branch)
        events, summary = await self._read_window(key, budget)
        if await self._recreated(key, events):
            await self.forget(tenant_id, session_id)
            events, summary = await self._read_window(key, budget)
        if events:
            self._remember(self._marks, key, (events[-1].seq, events[-1].created_at))
        if summary is None:
            summary = await self._remembered_summary(key, events)
        elif self._newer(key, summary):
            self._remember(self._summaries, key, summary)
        first = events[0].seq if events else 1
        covered = summary.to_seq if summary is not None else 0
        uncovered = first if first > covered + 1 else None
        tail = [e for e in events if e.seq > covered]
        if system is None and events:
            system, tail = await self._system_prompt(key, events, tail)
        current: NewEvent | None
        current = NewEvent.message("user", message) if isinstance(message, str) else message
        if current is None and tail and tail[-1].kind == "message" and tail[-1].role == "user":
            current, tail = tail[-1].draft(), tail[:-1]
        state = await self.store.get_state(
            tenant_id=tenant_id, session_id=session_id, branch=branch
        )
        count = _memo_counter(model)
        candidates: list[tuple[Turn, float]] = []
        near: dict[int, tuple[Event, ...]] = {}
        dates: dict[int, str] = {}
        note: str | None = None
        if current is not None and (
            summary is not None or uncovered is not None or _tokens(tail) > budget // 2
        ):
            if self._cold(key, events):
                note = (
                    f"none: this branch's {events[0].seq - 1} earlier events are being "
                    "indexed in the background (its first build in this process); the "
                    "builds after that retrieve"
                )
            else:
                candidates, near, dates = await self._retrieve(
                    key, events, event_text(current), policy
                )
        prefix_key = (*key, model)
        request = ContextRequest(
            model=model,
            budget=budget,
            tail=tail,
            system=system,
            pinned=self._render(state.data),
            summary=summary,
            candidates=candidates,
            current=current,
            previous_prefix=self._prefixes.get(prefix_key, ()),
            uncovered_before=uncovered,
            stored_counts=counter_for(model).name == counter_for(self.count_model).name,
            neighbours=near,
            dates=dates,
            line_tokens=self._line_tokens(key, model) if candidates else None,
            retrieval_note=note,
        )
        out = assemble(request, policy, count)
        self._remember(self._prefixes, prefix_key, out.manifest.prefix_hashes)
        self.stats.builds += 1
        scheduled = self._maybe_compact(key, summary, tail, out, count)
        return BuiltContext(out.messages, out.manifest, scheduled)

    async def _recreated(self, key: _Key, events: list[Event]) -> bool:
        """Whether the session was erased (and perhaps created again) since this process
        cached anything about ``key``: the newest event the previous build saw is no
        longer in the log as it was. Another worker may have served the erase, and
        :meth:`forget` runs only in that one; this check drops the cached text everywhere
        else before its next use, with no store call unless the window no longer reaches
        the remembered event."""
        mark = self._marks.get(key)
        if mark is None:
            return False
        seq, created = mark
        if not events or events[-1].seq < seq:
            return True  # a log never gets shorter
        seen = next((e for e in events if e.seq == seq), None)
        if seen is None:
            found = await self.store.read(
                tenant_id=key[0], session_id=key[1], branch=key[2], after_seq=seq - 1, limit=1
            )
            seen = found[0] if found else None
        return seen is None or seen.created_at != created

    def _newer(self, key: _Key, summary: SummaryInput) -> bool:
        known = self._summaries.get(key)
        return known is None or summary.seq > known.seq

    async def _remembered_summary(self, key: _Key, events: list[Event]) -> SummaryInput | None:
        """The summary this process last saw for ``key``, when the window (too many new
        turns since) did not reach it; checked against the log, since another process may
        have deleted and recreated the session."""
        known = self._summaries.get(key)
        if known is None or (events and known.seq > events[-1].seq):
            return None
        found = await self.store.read(
            tenant_id=key[0], session_id=key[1], branch=key[2], after_seq=known.seq - 1, limit=1
        )
        if found and _summary_of(found[0]) == known:
            return known
        self._summaries.pop(key, None)
        return None

    async def _read_window(self, key: _Key, budget: int) -> tuple[list[Event], SummaryInput | None]:
        """The newest events, read backwards, down to the newest summary's ``to_seq`` or
        until they hold twice the budget (older ones could not be sent anyway) or
        ``tail_limit`` events. Returns them oldest first, and the summary.

        The first page is sized to need no second one: the window's length at the
        previous build plus a turn's worth, or (first build) twice the budget at 40 tokens
        an event; a next page, to what twice the budget still needs at the tokens per
        event seen so far."""
        events: list[Event] = []
        summary: SummaryInput | None = None
        tokens = 0
        before: int | None = None
        hint = self._window_sizes.get(key)
        size = hint + 8 if hint is not None else 2 * budget // 40
        size = max(16, min(self._tail_limit, size))
        while len(events) < self._tail_limit:
            limit = min(size, self._tail_limit - len(events))
            page = await self.store.read(
                tenant_id=key[0],
                session_id=key[1],
                branch=key[2],
                before_seq=before,
                limit=limit,
                order="desc",
            )
            for event in page:
                if summary is not None and event.seq <= summary.to_seq:
                    return self._window_done(key, events, summary)
                events.append(event)
                if summary is None and event.kind == "summary":
                    summary = _summary_of(event)
                tokens += event.token_count or len(event_text(event)) // 3
            if len(page) < limit or (summary is None and tokens > 2 * budget):
                break
            before = page[-1].seq
            per_event = max(1.0, tokens / len(events))
            size = max(16, int((2 * budget - tokens) / per_event) + 8)
        return self._window_done(key, events, summary)

    def _window_done(
        self, key: _Key, events: list[Event], summary: SummaryInput | None
    ) -> tuple[list[Event], SummaryInput | None]:
        self._remember(self._window_sizes, key, len(events))
        events.reverse()
        return events, summary

    async def _system_prompt(
        self, key: _Key, events: list[Event], tail: list[Event]
    ) -> tuple[str | None, list[Event]]:
        """The log's first event when it is a system message (kept out of the tail)."""
        if events[0].seq == 1:
            first: Event | None = events[0]
        elif key in self._systems:
            return self._systems[key], tail
        else:
            head = await self.store.read(
                tenant_id=key[0], session_id=key[1], branch=key[2], limit=1
            )
            first = head[0] if head else None
        text = None
        if first is not None and first.kind == "message" and first.role == "system":
            text = event_text(first)
        if first is not None:
            self._remember(self._systems, key, text)
        return (None, tail) if text is None else (text, [e for e in tail if e.seq != 1])

    def _cold(self, key: _Key, window: list[Event]) -> bool:
        """Whether ``key`` has no index and more history before ``window`` than a build
        indexes itself; if so, a background task indexes it (once)."""
        if key in self._indexes or not window or window[0].seq - 1 <= self._cold_inline:
            return False
        if key not in self._warming:
            task = asyncio.create_task(self._warm(key), name=f"index-{key[1]}-{key[2]}")
            self._warming[key] = task
            task.add_done_callback(lambda t: self._warmed(key, t))
        return True

    async def _warm(self, key: _Key) -> None:
        """Index ``key``'s whole log, a page at a time, yielding between chunks."""
        index = SessionIndex(self._retriever_factory())
        async for page in self._pages(key, 0, None):
            for start in range(0, len(page), _WARM_CHUNK):
                docs = index.documents(page[start : start + _WARM_CHUNK])
                if docs:
                    await _off_loop(index.retriever, index.retriever.add, docs)
                await asyncio.sleep(0)  # the event loop serves other requests meanwhile
        self._indexes.put(key, index)

    def _warmed(self, key: _Key, task: asyncio.Task[None]) -> None:
        self._warming.pop(key, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The next build of the branch tries again; its builds meanwhile go without.
            log.warning("indexing %s in the background failed: %r", key[1], exc)

    async def _retrieve(
        self, key: _Key, window: list[Event], query: str, policy: ContextPolicy
    ) -> tuple[list[tuple[Turn, float]], dict[int, tuple[Event, ...]], dict[int, str]]:
        """Retrieved messages, best first; the messages around each; their dates."""
        index = self._indexes.get(key) or SessionIndex(self._retriever_factory())
        await self._index_up_to(key, index, window)
        self._indexes.put(key, index)
        k = 2 * policy.retrieve_k + 8
        queries = [(query, 1.0)]
        if policy.multi_query:
            queries += [(q, 0.5) for q in sub_queries(query)]
        ranked = [
            (weight, await _off_loop(index.retriever, index.retriever.search, q, k=k))
            for q, weight in queries
        ]
        hits = ranked[0][1] if len(ranked) == 1 else fuse(ranked, k)
        return index.hits(hits, _memo_counter(self.count_model))

    def _line_tokens(self, key: _Key, model: str) -> Callable[[Event], int | None] | None:
        """The lines' token counts that ``key``'s index keeps (see
        :meth:`SessionIndex.line_tokens`), in ``model``'s tokenizer."""
        index = self._indexes.get(key)
        if index is None:
            return None
        return index.line_tokens(_memo_counter(model), counter_for(model).name)

    async def _index_up_to(self, key: _Key, index: SessionIndex, window: list[Event]) -> None:
        """Index the messages newer than ``index.upto`` (reading a gap once, cold)."""
        if not window:
            return
        fresh = [e for e in window if e.seq > index.upto]
        if window[0].seq > index.upto + 1:
            fresh = await self._read_span(key, index.upto, window[0].seq) + fresh
        docs = index.documents(fresh)
        if docs:
            await _off_loop(index.retriever, index.retriever.add, docs)

    def _remember(self, cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._max_sessions:
            cache.popitem(last=False)

    # -- compaction ---------------------------------------------------------------------

    def _maybe_compact(
        self,
        key: _Key,
        summary: SummaryInput | None,
        tail: list[Event],
        out: AssembledContext,
        count: Callable[[str], int],
    ) -> bool:
        if not self.auto_compact or not out.overflow or key in self._tasks:
            return False
        known = self._summaries.get(key)
        if known is not None and (summary is None or known.seq > summary.seq):
            return False  # a compaction landed while this build read: it is stale
        # Hysteresis: fold only once the overflow is worth a summary, and then down to
        # compact_to of the recent window, so a compaction runs every few turns, not
        # every turn (each fold costs milliseconds and a summary event).
        room = out.manifest.sections["recent"]
        if sum(t.tokens for t in out.overflow) < self._compact_step * room:
            return False
        target = int(room * self._compact_to)
        turns, _ = group_turns(tail, count=count, max_event_tokens=10**9)
        keep = 0
        cut = len(turns)
        while cut > 0 and keep + turns[cut - 1].tokens <= target:
            cut -= 1
            keep += turns[cut].tokens
        cut = min(cut, len(turns) - 1) if turns else 0
        if cut <= 0:
            return False
        to_seq = turns[cut - 1].last_seq
        span = [e for e in tail if e.seq <= to_seq and e.kind in _CHAT_KINDS]
        if not _worth_a_summary(summary, span):
            return False
        task = asyncio.create_task(
            self._compact(key, summary, span, to_seq), name=f"compact-{key[1]}-{to_seq}"
        )
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        return True

    async def _compact(
        self, key: _Key, previous: SummaryInput | None, span: list[Event], to_seq: int
    ) -> None:
        try:
            covered = previous.to_seq if previous else 0
            if span and span[0].seq > covered + 1:  # the window did not reach the summary
                gap = await self._read_span(key, covered, span[0].seq)
                span = [e for e in gap if e.kind in _CHAT_KINDS] + span
            text = await self.summariser.summarise(
                previous=previous.text if previous else None,
                events=span,
                max_tokens=self._summary_tokens,
            )
            data: dict[str, JSONValue] = {
                "from_seq": previous.from_seq if previous else 1,
                "to_seq": to_seq,
                "text": text,
                "previous": previous.seq if previous else None,
                "summariser": type(self.summariser).__name__,
            }
            try:
                result = await self.store.append(
                    tenant_id=key[0],
                    session_id=key[1],
                    branch=key[2],
                    events=[NewEvent(kind="summary", data=data)],
                    idempotency_key=f"summary-{key[2]}-{to_seq}",
                )
            except IdempotencyMismatch:
                # Another process (or an earlier attempt) summarised up to the same seq.
                log.info("%s/%s already has a summary up to seq %d", key[1], key[2], to_seq)
                return
            written = _summary_of(result.events[0])
            if written is not None:
                self._remember(self._summaries, key, written)
            self.stats.compactions += 1
            log.info("compacted %s/%s up to seq %d", key[1], key[2], to_seq)
        except Exception:  # the previous summary stays in use; say so loudly
            self.stats.compaction_failures += 1
            log.warning(
                "compaction of %s/%s up to seq %d failed", key[1], key[2], to_seq, exc_info=True
            )

    async def _read_span(self, key: _Key, after: int, before: int) -> list[Event]:
        return [event async for page in self._pages(key, after, before) for event in page]

    async def _pages(self, key: _Key, after: int, before: int | None) -> AsyncIterator[list[Event]]:
        """``key``'s events after ``after`` (and before ``before``), in pages of 1,000."""
        while page := await self.store.read(
            tenant_id=key[0],
            session_id=key[1],
            branch=key[2],
            after_seq=after,
            before_seq=before,
            limit=1000,
        ):
            yield page
            after = page[-1].seq

    async def forget(self, tenant_id: str, session_id: str) -> None:
        """Drop everything this engine holds in memory about a session (its retrieval
        indexes, prefix hashes, pending compactions): call it when the session is deleted,
        so no erased text lingers in the process."""
        self._indexes.drop(tenant_id, session_id)
        for pkey in [k for k in self._prefixes if k[:2] == (tenant_id, session_id)]:
            del self._prefixes[pkey]
        for skey in [k for k in self._summaries if k[:2] == (tenant_id, session_id)]:
            del self._summaries[skey]
        for ykey in [k for k in self._systems if k[:2] == (tenant_id, session_id)]:
            del self._systems[ykey]
        for wkey in [k for k in self._window_sizes if k[:2] == (tenant_id, session_id)]:
            del self._window_sizes[wkey]
        for mkey in [k for k in self._marks if k[:2] == (tenant_id, session_id)]:
            del self._marks[mkey]
        doomed = [
            t
            for k, t in [*self._tasks.items(), *self._warming.items()]
            if k[:2] == (tenant_id, session_id)
        ]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.gather(*doomed, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the compactions and background indexing scheduled so far (tests,
        shutdown)."""
        while self._tasks or self._warming:
            pending = [*self._tasks.values(), *self._warming.values()]
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()


_WARM_CHUNK = 128
"""Messages a background indexing task adds between two yields to the event loop (BM25
indexes one in about 0.2 ms on the project's machine: a pause of about 25 ms at most)."""


async def _off_loop(
    retriever: Retriever, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """Run a retriever call in a thread when the retriever says it blocks."""
    if getattr(retriever, "blocking", False):
        return await asyncio.to_thread(call, *args, **kwargs)
    return call(*args, **kwargs)


def _summary_of(event: Event) -> SummaryInput | None:
    data = event.data
    lo, hi, text = data.get("from_seq"), data.get("to_seq"), data.get("text")
    if isinstance(lo, int) and isinstance(hi, int) and isinstance(text, str) and hi < event.seq:
        return SummaryInput(seq=event.seq, from_seq=lo, to_seq=hi, text=text)
    return None


_FOLD_RATIO = 5
"""A fold takes at least this many times the previous summary's text (see below)."""


def _worth_a_summary(previous: SummaryInput | None, span: list[Event]) -> bool:
    """Fold only text at least ``_FOLD_RATIO`` times the size of the summary it replaces.
    Each summary is about as long as the previous one, so summaries stay within a fifth
    of the log's raw text. Measured on LoCoMo (2,000 / 4,000 tokens) and the bench's
    1,000-turn log: ratio 2, recall 0.762 / 0.819, 251 summaries, 0.49x the raw text;
    ratio 5, 0.762 / 0.819, 106 summaries, 0.20x (retrieval, not the summary, finds the
    evidence: 0.002 of it came from summaries). Ratio 8 left turns neither summarised nor
    sent when the summary grows (a summariser that keeps every line). When the window
    did not reach back to the previous summary, the gap is folded too: its size is
    estimated from the span's average."""
    if previous is None or not span:
        return True
    chars = sum(len(event_text(e)) for e in span)
    gap = max(0, span[0].seq - previous.to_seq - 1)  # events the window did not reach
    return chars + chars * gap / len(span) >= _FOLD_RATIO * len(previous.text)


def _tokens(events: list[Event]) -> int:
    return sum(e.token_count or len(event_text(e)) // 3 for e in events)


_MEMO_TEXT_MAX = 4096
"""Texts longer than this (characters) are counted each time instead of kept in the memo:
the memo's memory stays bounded at about 8,192 entries x 4 KB per tokenizer."""


@lru_cache(maxsize=16)
def _memo_counter(model: str) -> Callable[[str], int]:
    """The model's counter behind a bounded memo: a message's text is counted once per
    process; long texts (summaries, pastes) are counted afresh, without being kept."""
    count = counter_for(model).count
    memo = lru_cache(maxsize=8192)(count)

    def counted(text: str) -> int:
        return memo(text) if len(text) <= _MEMO_TEXT_MAX else count(text)

    return counted
