"""Context assembly benchmark: cost per build as history grows, and tokens saved.

``python -m chatstate.bench context`` builds sessions of 100, 1,000 and 10,000 events in a
temp SQLite file (synthetic chat, ~60 words a message, content words drawn from a
4,000-word Zipf lexicon like natural text), in the steady state the
engine keeps them in: a summary event covering everything but the newest 40 events. It
then times ``ContextEngine.build`` with a fixed budget (window fixed, history growing),
and prints the tokens sent against the tokens of the full history for the same session.
The first build of each session is timed separately as the cold start: it indexes the
history itself up to 2,000 events, and past that leaves it to a background task and goes
without a retrieved section (``indexed ms``: until that task has finished).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatstate.context.engine import ContextEngine
from chatstate.context.retrieval import Retriever
from chatstate.context.tokens import counter_for
from chatstate.model import NewEvent
from chatstate.store.sqlite import SQLiteStore

__all__ = ["main"]

VOCAB = (
    "order refund shipping address account password invoice delivery package tracking "
    "broken screen battery charger warranty store pickup weekend monday friday price "
    "discount coupon email phone number manager escalate ticket support billing card "
    "payment failed retry subscription plan upgrade downgrade cancel renew trial holiday "
    "travel hotel flight booking seat luggage airport delay weather city museum dinner"
).split()
GLUE = "the a and to of my is it for with on that this was can you please I we".split()
TENANT = "bench"
TAIL = 40


def _lexicon(size: int = 4000) -> tuple[list[str], list[float]]:
    """The topic words plus made-up ones, with Zipf weights: natural text's shape, where a
    few words are everywhere and most are rare (a tiny vocabulary would make every term
    match every turn, which no real conversation does)."""
    rng = random.Random(0)  # noqa: S311 - seeded synthetic text
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(VOCAB)
    while len(words) < size:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))))
    rng.shuffle(words)
    return words, [1.0 / (rank + 1) for rank in range(len(words))]


WORDS, WEIGHTS = _lexicon()


def _sentence(rng: random.Random, words: int) -> str:
    out = []
    for i in range(words):
        out.append(rng.choices(WORDS, WEIGHTS)[0] if i % 3 == 0 else rng.choice(GLUE))
    if rng.random() < 0.3:
        out.append(f"#{rng.randrange(10_000, 99_999)}")
    return " ".join(out)


async def _session(engine: ContextEngine, store: SQLiteStore, size: int, seed: int) -> str:
    rng = random.Random(seed)  # noqa: S311 - seeded synthetic text, not security
    session = (await store.create_session(tenant_id=TENANT)).id
    events = []
    for i in range(size):
        role = "user" if i % 2 == 0 else "assistant"
        events.append(NewEvent.message(role, _sentence(rng, 60)))  # type: ignore[arg-type]
    for start in range(0, size - TAIL, 1000):
        await engine.append(
            session, events[start : min(start + 1000, size - TAIL)], tenant_id=TENANT
        )
    if size > TAIL:
        summary = NewEvent(
            kind="summary",
            data={
                "from_seq": 1,
                "to_seq": size - TAIL,
                "text": "\n".join(_sentence(rng, 20) for _ in range(12)),
            },
        )
        await store.append(tenant_id=TENANT, session_id=session, events=[summary])
    await engine.append(session, events[max(0, size - TAIL) :], tenant_id=TENANT)
    return session


def _factory(name: str) -> Callable[[], Retriever]:
    from chatstate.context import embeddings  # noqa: PLC0415 - light unless a model loads

    if name == "bm25":
        return embeddings.message_retriever
    encode = embeddings.load_minilm()
    return lambda: embeddings.message_retriever(embeddings.EmbeddingRetriever(encode=encode))


async def _run(sizes: list[int], builds: int, budget: int, retriever: str = "bm25") -> None:
    count = counter_for("gpt-4o").count
    with tempfile.TemporaryDirectory(prefix="chatstate-bench-") as tmp:
        store = await SQLiteStore.open(Path(tmp) / "context.db")
        # Compaction is a background cost: keep it out of the timed builds.
        engine = ContextEngine(store, auto_compact=False, retriever_factory=_factory(retriever))
        print(
            f"\n{'events':>8} {'cold ms':>8} {'indexed ms':>11} {'build p50 ms':>13} {'p99 ms':>8} "
            f"{'tokens sent':>12} {'full history':>13} {'ratio':>7}"
        )
        medians = {}
        for size in sizes:
            print(f"  building a {size:,}-event session ...", file=sys.stderr, flush=True)
            session = await _session(engine, store, size, seed=size)
            query = "what was the tracking number for the broken battery order?"
            start = time.perf_counter()
            await engine.build(session, query, tenant_id=TENANT, budget=budget)
            cold = (time.perf_counter() - start) * 1e3
            await engine.drain()  # a long history is indexed in the background
            indexed = (time.perf_counter() - start) * 1e3
            samples = []
            for _ in range(builds):
                start = time.perf_counter()
                built = await engine.build(session, query, tenant_id=TENANT, budget=budget)
                samples.append((time.perf_counter() - start) * 1e3)
            await engine.drain()
            full = 0
            after = 0
            while page := await store.read(
                tenant_id=TENANT, session_id=session, after_seq=after, limit=1000
            ):
                full += sum(count(str(e.content)) + 4 for e in page if e.kind == "message")
                after = page[-1].seq
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            medians[size] = p50
            sent = built.manifest.used
            print(
                f"{size:>8,} {cold:>8.1f} {indexed:>11.1f} {p50:>13.2f} {p99:>8.2f} {sent:>12,} "
                f"{full:>13,} "
                f"{full / sent:>6.1f}x"
            )
        await store.close()
    if len(sizes) >= 2:
        mid, last = sizes[-2], sizes[-1]
        print(
            f"flatness: build p50 at {last:,} events / at {mid:,} = "
            f"{medians[last] / medians[mid]:.2f}x (target <= 1.5x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench context",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--builds", type=int, default=200, help="timed builds per size")
    parser.add_argument("--budget", type=int, default=2000, help="token budget per build")
    parser.add_argument(
        "--retriever",
        choices=("bm25", "fused"),
        default="bm25",
        help="bm25 (default) or fused with MiniLM (the [embeddings] extra)",
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    asyncio.run(_run(sizes, args.builds, args.budget, args.retriever))
    return 0
