"""Child process for the crash test: append forever, print each acknowledged append.

Usage: python -m tests.helpers.sqlite_appender DB_PATH ROUND SEED
Each append carries 1-3 events named "ROUND-I-K/N"; after the store acknowledges it the
child prints "ack ROUND-I N" and flushes, so the parent knows exactly what was promised.
"""

import asyncio
import contextlib
import random
import sys

from chatstate.errors import AlreadyExists
from chatstate.model import NewEvent
from chatstate.store.sqlite import SQLiteStore


async def main(path: str, round_no: int, seed: int) -> None:
    rng = random.Random(seed)
    store = await SQLiteStore.open(path)
    with contextlib.suppress(AlreadyExists):  # the session exists after the first round
        await store.create_session(tenant_id="crash", session_id="s")
    print("ready", flush=True)
    i = 0
    while True:
        n = rng.randint(1, 3)
        events = [NewEvent.message("user", f"{round_no}-{i}-{k}/{n}") for k in range(n)]
        await store.append(
            tenant_id="crash", session_id="s", events=events, idempotency_key=f"r{round_no}-{i}"
        )
        print(f"ack {round_no}-{i} {n}", flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
