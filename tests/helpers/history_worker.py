"""One client process of the multi-instance test: random appends and whole-log reads on a
few sessions for a while, every operation recorded as a JSONL line before the next starts.

Usage: python -m tests.helpers.history_worker URL CACHE_URL|- SESSIONS WORKER SECONDS OUT
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from chatstate.errors import ChatstateError
from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.store.url import open_store
from chatstate.testing.history import Op


async def read_all(store: Store, session: str) -> tuple[str, ...]:
    values: list[str] = []
    after = 0
    while page := await store.read(
        tenant_id="hist", session_id=session, after_seq=after, limit=500
    ):
        values += [str(e.content) for e in page]
        after = page[-1].seq
    return tuple(values)


async def main(
    url: str, cache_url: str, sessions: list[str], worker: int, seconds: float, out: Path
) -> None:
    rng = random.Random(worker)
    store = await open_store(url, cache_url=None if cache_url == "-" else cache_url)
    deadline = time.monotonic() + seconds
    i = 0
    with out.open("w") as sink:
        while time.monotonic() < deadline:
            session = rng.choice(sessions)
            started = time.time_ns()
            if rng.random() < 0.7:
                value = f"w{worker}-{i}"
                i += 1
                try:
                    result = await store.append(
                        tenant_id="hist",
                        session_id=session,
                        events=[NewEvent.message("user", value)],
                    )
                    op = Op("append", session, True, value=value, seq=result.first_seq)
                except ChatstateError:
                    op = Op("append", session, False, value=value)
            else:
                try:
                    op = Op("read", session, True, seen=await read_all(store, session))
                except ChatstateError:
                    op = Op("read", session, False)
            done = Op(
                op.kind, op.session, op.ok, op.value, op.seq, op.seen, started, time.time_ns()
            )
            sink.write(done.to_json() + "\n")
            sink.flush()
    await store.close()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            sys.argv[3].split(","),
            int(sys.argv[4]),
            float(sys.argv[5]),
            Path(sys.argv[6]),
        )
    )
