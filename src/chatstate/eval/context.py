"""Context recall on real conversations: replay through the engine, then ask.

For each conversation and each budget, a fresh session on a temp SQLite store is replayed
the way the server drives chatstate: per turn, :meth:`ContextEngine.build` with the new
user message (which schedules compaction in the background when turns overflow), then
:meth:`ContextEngine.append` of the user message and the replies, then the
:class:`~chatstate.state.StateKeeper` brings the state document up to date (the server's
``after_turn``). The replay is deterministic: a compaction that a build scheduled is
awaited before the turn is appended, and the keeper's sync is awaited after it, so the
log (and with it the figure) never depends on how the event loop interleaved background
work. After the last turn compaction is switched off, so that every question sees the
same log. Then each question is built as the next user message under that budget
and every evidence turn is classified by :func:`chatstate.eval.recall.route_of`. The
baselines of :mod:`chatstate.eval.recall` are computed for the same question and budget.

The questions come at the end of the conversation, which is LoCoMo's own setting. One
session per budget, because the summaries a session accumulates depend on the budget its
builds ran under, as they would in a deployment.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chatstate.context.assemble import ContextPolicy
from chatstate.context.engine import ContextEngine
from chatstate.context.retrieval import Retriever
from chatstate.context.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD, counter_for
from chatstate.eval.datasets import Conversation, Question, Utterance
from chatstate.eval.recall import (
    front_truncation,
    retrieved_text,
    route_of,
    sliding_window,
    summary_text,
    turn_starts,
    window_turns,
)
from chatstate.model import JSONValue, NewEvent
from chatstate.state import StateKeeper
from chatstate.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_CATEGORIES",
    "EvalOptions",
    "RetrieverName",
    "evaluate",
    "resolve_retriever",
    "select_questions",
]

log = logging.getLogger(__name__)

RetrieverName = Literal["auto", "bm25", "minilm", "fused"]
TENANT = "eval"
BRANCH = "main"
"""The branch each conversation is replayed on; the keeper and every build use its state."""
DEFAULT_CATEGORIES = {"locomo": frozenset({"1", "2", "3", "4"})}
"""LoCoMo's category 5 is adversarial (unanswerable): left out unless asked for."""
Record = dict[str, JSONValue]


@dataclass(frozen=True, slots=True)
class EvalOptions:
    budgets: tuple[int, ...] = (500, 1000, 2000, 4000)
    model: str = "gpt-4o"
    policy: ContextPolicy = field(default_factory=ContextPolicy)
    summary_tokens: int = 600
    """The engine's ``summary_tokens``: the size its summariser aims at."""
    retriever: RetrieverName = "auto"
    """``auto``: fused when the ``[embeddings]`` extra is installed, else ``bm25`` (the
    engine's own default; see :func:`resolve_retriever`)."""
    categories: frozenset[str] | None = None
    """Question categories to ask (default: :data:`DEFAULT_CATEGORIES`, else all)."""
    limit: int | None = None
    """At most this many questions per conversation, evenly spaced; ``None``: all."""
    state: bool = True
    """Run the :class:`~chatstate.state.StateKeeper` after each turn, as the server does."""
    price_per_mtok: float = 2.50
    """Input price in dollars per million tokens, for the cost column (gpt-4o's list
    price for uncached input when this was written)."""


def select_questions(conv: Conversation, opts: EvalOptions) -> list[Question]:
    """The questions asked: of the chosen categories, evenly spaced down to ``limit``."""
    wanted = opts.categories or DEFAULT_CATEGORIES.get(conv.dataset)
    chosen = [q for q in conv.questions if wanted is None or q.category in wanted]
    if opts.limit is not None and len(chosen) > opts.limit:
        step = len(chosen) / opts.limit
        chosen = [chosen[int(i * step)] for i in range(opts.limit)]
    return chosen


def resolve_retriever(name: RetrieverName) -> RetrieverName:
    """``auto`` as the engine resolves it: ``fused`` with the extra, else ``bm25``."""
    if name != "auto":
        return name
    from chatstate.context.embeddings import default_retriever_name  # noqa: PLC0415

    return "fused" if default_retriever_name() == "fused" else "bm25"


def _retriever_factory(name: RetrieverName) -> Callable[[], Retriever]:
    from chatstate.context import embeddings  # noqa: PLC0415 - light unless a model loads

    name = resolve_retriever(name)
    if name == "bm25":
        return embeddings.message_retriever

    encode = _cached(embeddings.load_minilm())

    def dense() -> Retriever:
        return embeddings.EmbeddingRetriever(encode=encode)

    if name == "minilm":
        return dense
    return lambda: embeddings.message_retriever(dense())


def _cached(
    encode: Callable[[Sequence[str]], Sequence[Sequence[float]]],
) -> Callable[[Sequence[str]], Sequence[Sequence[float]]]:
    """``encode`` with a per-text memo: every budget replays the same turns."""
    memo: dict[str, Sequence[float]] = {}

    def cached(texts: Sequence[str]) -> Sequence[Sequence[float]]:
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            memo.update(zip(todo, encode(todo), strict=True))
        return [memo[t] for t in texts]

    return cached


async def _replay(
    engine: ContextEngine,
    keeper: StateKeeper | None,
    session: str,
    conv: Conversation,
    budget: int,
    model: str,
) -> dict[str, int]:
    """Drive the session turn by turn; return each utterance's seq.

    Background work is awaited at fixed points (see the module docstring)."""
    seqs: dict[str, int] = {}
    utterances = conv.utterances
    i = 0
    while i < len(utterances):
        j = i + 1
        while j < len(utterances) and utterances[j].role != "user":
            j += 1
        group = utterances[i:j]
        if group[0].role == "user":
            built = await engine.build(
                session, group[0].text, tenant_id=TENANT, model=model, budget=budget, branch=BRANCH
            )
            if built.compaction_scheduled:
                await engine.drain()
        result = await engine.append(
            session,
            [NewEvent.message(u.role, u.text) for u in group],
            tenant_id=TENANT,
            branch=BRANCH,
        )
        seqs.update((u.id, e.seq) for u, e in zip(group, result.events, strict=True))
        if keeper is not None:
            await keeper.sync(session, tenant_id=TENANT)
        i = j
    await engine.drain()
    return seqs


@dataclass(slots=True)
class _Conv:
    """What the baselines need of one conversation, computed once."""

    costs: list[int]
    starts: list[int]
    index: dict[str, int]
    said: dict[str, str]

    @classmethod
    def of(cls, utterances: Sequence[Utterance], count: Callable[[str], int]) -> _Conv:
        return cls(
            costs=[count(u.text) + MESSAGE_OVERHEAD for u in utterances],
            starts=turn_starts([u.role for u in utterances]),
            index={u.id: i for i, u in enumerate(utterances)},
            said={u.id: u.said for u in utterances},
        )


async def _budget_run(
    store: SQLiteStore,
    conv: Conversation,
    questions: list[Question],
    budget: int,
    opts: EvalOptions,
    factory: Callable[[], Retriever],
    facts: _Conv,
) -> list[Record]:
    count = counter_for(opts.model).count
    engine = ContextEngine(
        store,
        policy=opts.policy,
        summary_tokens=opts.summary_tokens,
        retriever_factory=factory,
        count_model=opts.model,
    )
    session = (await store.create_session(tenant_id=TENANT)).id
    keeper = StateKeeper(store, branch=BRANCH) if opts.state else None
    seqs = await _replay(engine, keeper, session, conv, budget, opts.model)
    engine.auto_compact = False
    out: list[Record] = []
    for q in questions:
        fixed = count(q.text) + MESSAGE_OVERHEAD + REPLY_OVERHEAD
        avail = budget - fixed
        built = await engine.build(
            session, q.text, tenant_id=TENANT, model=opts.model, budget=budget, branch=BRANCH
        )
        summary, state = summary_text(built.messages)
        retrieved = retrieved_text(built.messages)
        routes: list[JSONValue] = [
            route_of(seqs[e], facts.said[e], q.answer, built.manifest, summary, state, retrieved)
            for e in q.evidence
        ]
        front = front_truncation(facts.costs, avail)
        n = window_turns(facts.costs, facts.starts, avail)
        window = sliding_window(facts.costs, facts.starts, n, avail)
        positions = [facts.index[e] for e in q.evidence]
        out.append(
            {
                "budget": budget,
                "chatstate": {"tokens": built.manifest.used, "routes": routes},
                "front_truncation": {
                    "tokens": front.tokens + fixed,
                    "found": sum(p >= front.kept_from for p in positions),
                },
                "sliding_window": {
                    "tokens": window.tokens + fixed,
                    "found": sum(p >= window.kept_from for p in positions),
                    "turns": n,
                },
            }
        )
    await engine.aclose()
    return out


async def evaluate(
    conversations: Sequence[Conversation], opts: EvalOptions, *, progress: bool = True
) -> list[Record]:
    """One record per question asked: its evidence, the full history's tokens, and per
    budget what chatstate and each baseline kept."""
    count = counter_for(opts.model).count
    factory = _retriever_factory(opts.retriever)
    records: list[Record] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chatstate-eval-") as tmp:
        store = await SQLiteStore.open(Path(tmp) / "eval.db")
        try:
            for number, conv in enumerate(conversations, 1):
                questions = select_questions(conv, opts)
                if not questions:
                    continue
                facts = _Conv.of(conv.utterances, count)
                per_budget = [
                    await _budget_run(store, conv, questions, b, opts, factory, facts)
                    for b in opts.budgets
                ]
                records += _records(conv, questions, facts, per_budget, count)
                last_of_set = number == len(conversations) or (
                    conversations[number].dataset != conv.dataset
                )
                if progress and (len(conv.utterances) >= 50 or last_of_set):
                    print(
                        f"  {conv.dataset} {conv.id} ({number}/{len(conversations)}): "
                        f"{len(conv.utterances)} messages, {len(questions)} questions, "
                        f"{time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            await store.close()
    return records


def _records(
    conv: Conversation,
    questions: list[Question],
    facts: _Conv,
    per_budget: list[list[Record]],
    count: Callable[[str], int],
) -> list[Record]:
    full = sum(facts.costs)
    out: list[Record] = []
    for i, q in enumerate(questions):
        out.append(
            {
                "dataset": conv.dataset,
                "conversation": conv.id,
                "messages": len(conv.utterances),
                "turns": len(facts.starts),
                "question": q.text,
                "category": q.category,
                "evidence": list(q.evidence),
                "full_tokens": full + count(q.text) + MESSAGE_OVERHEAD + REPLY_OVERHEAD,
                "budgets": [runs[i] for runs in per_budget],
            }
        )
    return out
