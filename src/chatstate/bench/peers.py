"""chatstate against the session stores users would pick instead, on one conversation.

``python -m chatstate.bench peers`` (also ``chatstate bench``) grows one synthetic chat
(user and assistant messages of about 120 words each, the same text for every system)
to 5,000 turns in each system, in one run on this machine. One **turn** is what a chat
app asks of its session layer per model call: produce the input for the model from the
stored conversation and the new user message, then store the user message and the reply.

* ``floor``: bare ``sqlite3`` (WAL, ``synchronous=NORMAL``): one transaction inserting the
  two messages, a ``SELECT`` of the newest 20, the two messages' token counts.
* ``chatstate``: SQLite store and :class:`ContextEngine` (BM25 retrieval, extractive
  summaries compacting in the background, as shipped): ``build`` under ``--budget``,
  then ``append`` of both messages (counted once there). ``chatstate-bounded``: the same
  with ``ExtractiveSummariser(overflow="drop_oldest")``, a summary of bounded size (the
  default keeps every fact line, so its summary grows with the conversation).
  ``chatstate-encrypted``: ``chatstate`` behind :class:`~chatstate.store.encrypted.
  EncryptedStore` (AES-256-GCM, ``[encryption]`` extra): what encryption at rest costs
  a turn.
* ``agents-sqlite``: the OpenAI Agents SDK's ``SQLiteSession``: ``get_items()`` (the
  whole history, which its runner sends), then ``add_items`` of both messages.
* ``langgraph-sqlite`` / ``langgraph-postgres``: a compiled ``StateGraph(MessagesState)``
  with one node that returns the reply, checkpointed by ``SqliteSaver`` or
  ``PostgresSaver`` (the latter when PostgreSQL answers at ``--postgres-url``): one
  ``invoke`` with the user message, i.e. what a LangGraph chat app does per turn: load
  the latest checkpoint, run the node on the full message list, write the checkpoints.
  The graph's own overhead is included, as it is in such an app.
* ``langgraph-chatstate``: the same graph checkpointed by chatstate's own adapter,
  :class:`chatstate.integrations.langgraph.ChatstateSaver` on SQLite (``[langgraph]``
  extra): the checkpointer swapped, nothing else.

Reported at 10, 100, 1,000, 5,000 and 10,000 turns (LangGraph at most ``--langgraph-max``,
1,000), each row as soon as a system reaches its size (``--json``: one JSON object a
line, then the ratios): median and p99 of the newest ``max(10, N/10)`` turns' times (so
the figure at N is the cost of a turn when the conversation is N turns long), bytes on
disk after a WAL checkpoint (PostgreSQL: the saver's tables' total relation size), and
the tokens handed to the model for the next turn (full history for the peers; the built
context for chatstate; 20 messages for the floor). Token
counting of the peers' output is left out of their times. A system stops when its total
time passes ``--time-cap`` (checked every turn) or its files pass ``--disk-cap``
(checked every 50 turns), and says so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from chatstate.bench import _peer_drivers as drivers
from chatstate.bench.context import GLUE, WEIGHTS, WORDS
from chatstate.context.tokens import MESSAGE_OVERHEAD, counter_for

__all__ = ["Result", "add_arguments", "conversation", "main", "run"]

SIZES = (10, 100, 1000, 5000, 10000)
SYSTEMS = (
    "floor",
    "chatstate",
    "chatstate-bounded",
    "chatstate-encrypted",
    "agents-sqlite",
    "langgraph-sqlite",
    "langgraph-chatstate",
    "langgraph-postgres",
)


def conversation(
    turns: int, words: int = 120, fact_rate: float = 0.1, seed: int = 7
) -> list[tuple[str, str]]:
    """``turns`` (user, assistant) pairs of about ``words`` words each, deterministic.

    Sentences of 6 to 18 words drawn from the Zipf lexicon of :mod:`chatstate.bench.context`
    (glue words between content words, like natural text); a share ``fact_rate`` of the
    sentences carries an order number (``#48213``), which the extractive summariser keeps
    as a fact.
    """
    rng = random.Random(seed)  # noqa: S311 - seeded synthetic text
    cum = list(itertools.accumulate(WEIGHTS))

    def message() -> str:
        sentences, left = [], words
        while left > 0:
            n = min(left, rng.randint(6, 18))
            content = rng.choices(WORDS, cum_weights=cum, k=n)
            text = [w if k % 3 == 0 else rng.choice(GLUE) for k, w in enumerate(content)]
            if rng.random() < fact_rate:
                text.append(f"#{rng.randrange(10_000, 99_999)}")
            sentences.append(" ".join(text).capitalize() + ".")
            left -= n
        return " ".join(sentences)

    return [(message(), message()) for _ in range(turns)]


@dataclass(slots=True)
class Result:
    system: str
    times_ms: list[float] = field(default_factory=list)
    """One per turn, in order."""
    at: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per checkpoint size: p50_ms, p99_ms, disk_bytes, tokens."""
    stopped: str | None = None
    note: str | None = None


def _stats(times: list[float], n: int) -> tuple[float, float]:
    window = sorted(times[max(0, n - max(10, n // 10)) : n])
    return statistics.median(window), window[min(len(window) - 1, int(len(window) * 0.99))]


def _drive(
    system: str,
    driver: drivers.Driver,
    pairs: list[tuple[str, str]],
    sizes: tuple[int, ...],
    caps: tuple[float, int],
    row: Callable[[Result, int], None] = lambda _r, _n: None,
) -> Result:
    result = Result(system)
    spent = 0.0
    try:
        for i, (user, reply) in enumerate(pairs):
            start = time.perf_counter()
            driver.turn(i, user, reply)
            took = time.perf_counter() - start
            result.times_ms.append(took * 1e3)
            spent += took
            n = i + 1
            if n < len(pairs) and spent > caps[0]:
                result.stopped = f"stopped after {n:,} turns: {spent:.0f} s > --time-cap"
                break
            if n % 50 == 0 and n < len(pairs) and driver.disk_bytes() > caps[1]:
                result.stopped = f"stopped after {n:,} turns: over --disk-cap"
                break
            if n in sizes:
                p50, p99 = _stats(result.times_ms, n)
                disk = driver.disk_bytes()
                result.at[n] = {"p50_ms": p50, "p99_ms": p99, "disk_bytes": disk}
                result.at[n]["tokens"] = driver.tokens_next(n)
                row(result, n)
                print(
                    f"  {system}: {n:,} turns, p50 {p50:.2f} ms, {disk / 1e6:.1f} MB, "
                    f"{spent:.0f} s so far",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        driver.close()
    if result.stopped:
        row(result, 0)
    return result


def run(args: argparse.Namespace, out: TextIO = sys.stdout, *, as_json: bool = False) -> int:
    """Run the bench with parsed ``args`` (see :func:`add_arguments`); print each size's
    row as it finishes, then the ratios (``as_json``: JSON Lines)."""
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",")))
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown:
        print(f"unknown systems: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    pairs = conversation(sizes[-1], args.words, args.fact_rate)
    count = counter_for("gpt-4o").count
    costs = [(count(u) + MESSAGE_OVERHEAD, count(a) + MESSAGE_OVERHEAD) for u, a in pairs]
    raw = sum(len(u.encode()) + len(a.encode()) for u, a in pairs[: sizes[-1]])
    print(
        f"peers bench: {sizes[-1]:,} turns of ~{args.words} words a message "
        f"({raw / sizes[-1] / 2:,.0f} bytes), {args.fact_rate:.0%} of sentences with a number, "
        f"budget {args.budget}",
        file=sys.stderr,
    )
    results: list[Result] = []

    def row(result: Result, n: int) -> None:
        if as_json:
            out.write(json.dumps(_row_json(result, n, pairs)) + "\n")
        else:
            out.write(_row_text(result, n, pairs))
        out.flush()

    if not as_json:
        out.write(_HEADER)
    with tempfile.TemporaryDirectory(prefix="chatstate-peers-", dir=args.tmp) as tmp:
        for system in chosen:
            factory: Callable[[], drivers.Driver] = drivers.FACTORIES[system](
                Path(tmp), costs, args
            )
            try:
                driver = factory()
            except drivers.Unavailable as exc:
                skipped = {"system": system, "skipped": str(exc)}
                out.write(json.dumps(skipped) + "\n" if as_json else f"{system}: skipped ({exc})\n")
                continue
            caps = (args.time_cap, int(args.disk_cap * 1e9))
            most = args.langgraph_max if system.startswith("langgraph") else len(pairs)
            reach = tuple(n for n in sizes if n <= most)
            result = _drive(system, driver, pairs[:most], reach, caps, row)
            if most < len(pairs) and not result.stopped:
                result.stopped = f"capped at {most:,} turns (--langgraph-max)"
                row(result, 0)
            results.append(result)
    if as_json:
        out.write(json.dumps({"ratios": _ratios_json(results, sizes)}) + "\n")
    else:
        for mine in (r for r in results if r.system.startswith("chatstate")):
            others = [r for r in results if not r.system.startswith("chatstate")]
            _ratios(mine, others, sizes, out)
    return 0


def _raw_bytes(pairs: list[tuple[str, str]], n: int) -> int:
    return sum(len(u.encode()) + len(a.encode()) for u, a in pairs[:n])


_HEADER = (
    f"\n{'system':<20}{'turns':>7}{'p50 ms':>10}{'p99 ms':>10}{'disk MB':>10}"
    f"{'disk/raw':>10}{'tokens':>10}\n"
)


def _row_text(r: Result, n: int, pairs: list[tuple[str, str]]) -> str:
    if n == 0:
        return f"{r.system:<20}{r.stopped}\n"
    a = r.at[n]
    return (
        f"{r.system:<20}{n:>7,}{a['p50_ms']:>10.3f}{a['p99_ms']:>10.3f}"
        f"{a['disk_bytes'] / 1e6:>10.2f}{a['disk_bytes'] / _raw_bytes(pairs, n):>9.2f}x"
        f"{a['tokens']:>10,.0f}\n"
    )


def _row_json(r: Result, n: int, pairs: list[tuple[str, str]]) -> dict[str, object]:
    if n == 0:
        return {"system": r.system, "stopped": r.stopped}
    a = r.at[n]
    return {
        "system": r.system,
        "turns": n,
        **{k: round(v, 4) for k, v in a.items()},
        "raw_bytes": _raw_bytes(pairs, n),
        "disk_over_raw": round(a["disk_bytes"] / _raw_bytes(pairs, n), 3),
    }


def _ratios_json(results: list[Result], sizes: tuple[int, ...]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for mine in (r for r in results if r.system.startswith("chatstate")):
        for r in (r for r in results if not r.system.startswith("chatstate")):
            for n in (n for n in sizes if n in r.at and n in mine.at):
                a, b = r.at[n], mine.at[n]
                out.append(
                    {
                        "system": mine.system,
                        "other": r.system,
                        "turns": n,
                        "time_x": round(a["p50_ms"] / b["p50_ms"], 3),
                        "disk_x": round(a["disk_bytes"] / b["disk_bytes"], 3),
                        "tokens_x": round(a["tokens"] / b["tokens"], 3),
                    }
                )
    return out


def _ratios(mine: Result, others: list[Result], sizes: tuple[int, ...], out: TextIO) -> None:
    """Each other system's figures over ``mine``'s, at the sizes both reached."""
    out.write(
        f"\n{mine.system + ' vs':<20}{'turns':>7}{'time x':>10}{'disk x':>10}{'tokens x':>10}\n"
    )
    for r in others:
        for n in sizes:
            if n not in r.at or n not in mine.at:
                continue
            a, b = r.at[n], mine.at[n]
            out.write(
                f"{r.system:<20}{n:>7,}{a['p50_ms'] / b['p50_ms']:>10.2f}"
                f"{a['disk_bytes'] / b['disk_bytes']:>10.2f}{a['tokens'] / b['tokens']:>10.2f}\n"
            )
    out.write(
        "(other / chatstate: above 1, the other takes more; the floor is the least possible)\n"
    )
    if 100 in mine.at and max(mine.at) > 100:
        last = max(mine.at)
        ratio = mine.at[last]["p50_ms"] / mine.at[100]["p50_ms"]
        out.write(f"{mine.system} flatness: p50 at {last:,} turns / at 100 = {ratio:.2f}x\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="turn counts")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--budget", type=int, default=2000, help="chatstate's token budget")
    parser.add_argument("--words", type=int, default=120, help="words per message")
    parser.add_argument(
        "--fact-rate", type=float, default=0.1, help="share of sentences with an order number"
    )
    parser.add_argument(
        "--time-cap", type=float, default=240, help="seconds per system before it stops"
    )
    parser.add_argument("--disk-cap", type=float, default=5, help="GB per system before it stops")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server for langgraph-postgres (skipped when it does not answer)",
    )
    parser.add_argument("--tmp", help="folder for the databases (default: the system's temp)")
    parser.add_argument(
        "--langgraph-max",
        type=int,
        default=1000,
        help="turns at most for the LangGraph systems (their checkpoints grow quadratically)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="JSON Lines output")
    args = parser.parse_args(argv)
    return run(args, as_json=args.json)
