"""Kill -9 the writer at random moments; nothing acknowledged may be lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from chatstate.store.sqlite import SQLiteStore

ROUNDS = 50
ROOT = Path(__file__).resolve().parent.parent


def _run_round(db: Path, round_no: int, rng: random.Random) -> list[tuple[str, int]]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.sqlite_appender",
            str(db),
            str(round_no),
            str(rng.randrange(1 << 30)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
    acks = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ack":  # a torn last line was never an ack
            acks.append((parts[1], int(parts[2])))
    return acks


async def test_kill_9_loses_no_acknowledged_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(20261125)
    acknowledged: list[tuple[str, int]] = []
    for round_no in range(ROUNDS):
        acknowledged += _run_round(db, round_no, rng)
    assert len(acknowledged) > ROUNDS  # the children did real work before dying

    store = await SQLiteStore.open(db)
    try:
        events = []
        after = 0
        while page := await store.read(
            tenant_id="crash", session_id="s", after_seq=after, limit=1000
        ):
            events += page
            after = page[-1].seq
    finally:
        await store.close()

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    contents = [str(e.content) for e in events]
    assert len(contents) == len(set(contents)), "an append was written twice"
    # Every append is whole: its N events sit together, in order.
    appends: list[str] = []
    i = 0
    while i < len(contents):
        name, part = contents[i].rsplit("-", 1)
        k, n = (int(x) for x in part.split("/"))
        assert k == 0, f"append {name} starts mid-way"
        assert contents[i : i + n] == [f"{name}-{j}/{n}" for j in range(n)], "torn append"
        appends.append(name)
        i += n
    stored = set(appends)
    lost = [name for name, _ in acknowledged if name not in stored]
    assert not lost, f"acknowledged appends lost: {lost[:5]}"
    # Acknowledged appends keep their order in the log.
    position = {name: idx for idx, name in enumerate(appends)}
    order = [position[name] for name, _ in acknowledged]
    assert order == sorted(order)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
