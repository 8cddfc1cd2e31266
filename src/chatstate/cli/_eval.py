"""``chatstate eval context`` and ``chatstate bench``: the measurements, as commands.

``eval context`` replays the shared conversation data sets through the context engine
and measures evidence recall against the baselines (see :mod:`chatstate.eval.context`):
a table on stdout (or the summary as JSON with ``--json``), progress on stderr, and in
``--out`` the raw results (``context-recall.json``) and the chart (``context-recall.png``,
with the ``[eval]`` extra). ``bench`` runs :mod:`chatstate.bench.peers`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import cast

from chatstate.bench import peers
from chatstate.cli._commands import Context, print_json
from chatstate.cli._errors import CliError, UsageError
from chatstate.context.assemble import ContextPolicy
from chatstate.context.assemble import parse_policy as policy_from_text
from chatstate.errors import ValidationError
from chatstate.eval import report
from chatstate.eval.context import EvalOptions, RetrieverName, evaluate, resolve_retriever
from chatstate.eval.datasets import DATASETS, Conversation, DatasetMissing, default_datasets_dir
from chatstate.model import JSONValue

__all__ = ["add_bench", "add_eval_context", "bench", "eval_context"]

Handler = Callable[[Context, argparse.Namespace], Coroutine[object, object, int]]
Register = Callable[..., argparse.ArgumentParser]


def add_eval_context(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Register
) -> None:
    """``eval context``, added to the ``eval`` group's subparsers."""
    p = command(
        sub,
        "context",
        eval_context,
        "evidence recall of built contexts on real conversations, against the baselines",
    )
    p.add_argument(
        "--datasets-dir",
        type=Path,
        help="where the data sets are (default: $CHATSTATE_DATASETS, else ../shared/datasets)",
    )
    p.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated (default: all present)"
    )
    p.add_argument("--budgets", default="500,1000,2000,4000", help="token budgets, comma-separated")
    p.add_argument("--limit", type=int, help="at most N questions per conversation, evenly spaced")
    p.add_argument("--categories", help="question categories to ask (default LoCoMo: 1,2,3,4)")
    p.add_argument("--model", default="gpt-4o", help="tokenizer and model name (default gpt-4o)")
    p.add_argument(
        "--retriever",
        choices=("auto", "bm25", "minilm", "fused"),
        default="auto",
        help="older-turn retriever: auto (the engine's default: fused when the [embeddings] "
        "extra is installed, else bm25); minilm and fused need the extra",
    )
    p.add_argument(
        "--policy",
        default="",
        metavar="PRESET,K=V,...",
        help="a preset (balanced, recall, cost) and/or ContextPolicy fields, "
        "e.g. recall or retrieved_share=0.5,retrieve_k=20,state_share=0",
    )
    p.add_argument("--summary-tokens", type=int, default=600, help="engine summary size (600)")
    p.add_argument("--price-per-mtok", type=float, default=2.50, help="$ per 1M input tokens")
    p.add_argument("--out", type=Path, default=Path("chatstate-eval"), help="folder for files")


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Register) -> None:
    """``bench``: chatstate against the session stores users would pick instead."""
    p = command(sub, "bench", bench, "per-turn time, disk and tokens against the peers")
    peers.add_arguments(p)


def parse_policy(text: str) -> ContextPolicy:
    """``ContextPolicy`` from ``"preset,field=value,..."`` (a bad one is a usage error)."""
    try:
        return policy_from_text(text)
    except ValidationError as exc:
        raise UsageError(f"--policy: {exc.message}") from exc


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise UsageError(f"{what}: expected integers separated by commas") from exc
    if not values or min(values) <= 0:
        raise UsageError(f"{what}: expected positive integers")
    return values


class _Tally(logging.Handler):
    """Counts the engine's warnings (summaries over size, failed compactions) so that a run
    reports them in one line each instead of a traceback per occurrence."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}: {record.msg}"] += 1


def _setting(opts: EvalOptions, policy: str) -> str:
    """The retriever and policy a run used, said first: ``auto`` is fused once the
    ``[embeddings]`` extra is installed, so the same command measures another engine."""
    used = resolve_retriever(opts.retriever)
    why = ""
    if opts.retriever == "auto":
        why = " (auto: the [embeddings] extra is installed)" if used == "fused" else " (auto)"
    return f"retriever: {used}{why}; policy: {policy or 'balanced'}"


async def eval_context(ctx: Context, args: argparse.Namespace) -> int:
    budgets = tuple(sorted(_ints(args.budgets, "--budgets")))
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    opts = EvalOptions(
        budgets=budgets,
        model=args.model,
        policy=parse_policy(args.policy),
        summary_tokens=args.summary_tokens,
        retriever=cast(RetrieverName, args.retriever),
        categories=frozenset(args.categories.split(",")) if args.categories else None,
        limit=args.limit,
        price_per_mtok=args.price_per_mtok,
    )
    folder = args.datasets_dir or default_datasets_dir()
    conversations: list[Conversation] = []
    for name in filter(None, (s.strip() for s in args.datasets.split(","))):
        if name not in DATASETS:
            raise UsageError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
        try:
            conversations += DATASETS[name](folder)
        except DatasetMissing as exc:
            ctx.err.write(f"skipped: {exc}\n")
    if not conversations:
        raise CliError(
            f"no data set found under {folder}: nothing to evaluate "
            "(--datasets-dir names the folder that holds locomo/, multiwoz21_sample/, ...)"
        )
    tally = _Tally()
    engine_log = logging.getLogger("chatstate.context")
    engine_log.addHandler(tally)
    engine_log.propagate = False
    try:
        records = await evaluate(conversations, opts)
    finally:
        engine_log.removeHandler(tally)
        engine_log.propagate = True
    summary = report.summarise(records, opts.price_per_mtok)
    for message, n in sorted(tally.counts.items()):
        ctx.err.write(f"engine warning, {n} times: {message}\n")
    options: dict[str, JSONValue] = {
        "budgets": cast(list[JSONValue], list(budgets)),
        "model": opts.model,
        "policy": cast(dict[str, JSONValue], dataclasses.asdict(opts.policy)),
        "summary_tokens": opts.summary_tokens,
        "retriever": resolve_retriever(opts.retriever),
        "categories": cast(list[JSONValue], sorted(opts.categories or ())),
        "limit": opts.limit,
        "price_per_mtok": opts.price_per_mtok,
        "engine_warnings": cast(dict[str, JSONValue], dict(tally.counts)),
    }
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_json(args.out / "context-recall.json", options, summary, records)
        why = report.write_chart(args.out / "context-recall.png", summary)
    except OSError as exc:
        raise CliError(f"cannot write to {args.out}: {exc}") from exc
    if ctx.as_json:
        print_json(ctx, {"options": options, "summary": summary})  # type: ignore[dict-item]
    else:
        ctx.out.write(f"{_setting(opts, args.policy)}\n")
        report.write_table(summary, ctx.out, model=opts.model)
    ctx.err.write(f"{why}\n" if why else f"chart: {args.out / 'context-recall.png'}\n")
    ctx.err.write(f"raw results: {args.out / 'context-recall.json'}\n")
    return 0


async def bench(ctx: Context, args: argparse.Namespace) -> int:
    # The peers' drivers are blocking and the bench runs its own event loop: a thread.
    return await asyncio.to_thread(peers.run, args, ctx.out, as_json=ctx.as_json)
