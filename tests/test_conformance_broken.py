"""The conformance suite must catch a backend whose append is not atomic.

``NoTxSQLiteStore`` is SQLite with ``BEGIN IMMEDIATE``/``COMMIT`` removed from its append
(every statement then commits on its own), and a short pause between the lookups and the
writes so that the race it opens is met on every run rather than by luck. The suite's
cross-instance atomicity tests run against two such stores on one file and must fail;
against the real backend they pass (they are part of the normal conformance run).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path

import pytest

from chatstate.store.backends.sqlite.store import SQLiteStore
from chatstate.store.front import Appended, AppendPlan, IdemRecord
from chatstate.store.protocol import Store
from chatstate.testing import conformance_shared as suite


class _SlowPlan(AppendPlan):
    def admit(self, head: int | None, idem: IdemRecord | None) -> IdemRecord | None:
        time.sleep(0.002)  # the window between reading the head and writing after it
        return super().admit(head, idem)


class _NoTx:
    """A connection whose transaction statements do nothing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql in ("BEGIN IMMEDIATE", "COMMIT"):
            return self._conn.execute("SELECT 1")
        return self._conn.execute(sql, *args)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)  # type: ignore[arg-type]


class NoTxSQLiteStore(SQLiteStore):
    _local = threading.local()

    @property
    def _db(self) -> sqlite3.Connection:
        conn = super()._db
        if getattr(self._local, "broken", False):
            return _NoTx(conn)  # type: ignore[return-value]
        return conn

    def _append(self, plan: AppendPlan) -> Appended:
        slow = _SlowPlan(**{f.name: getattr(plan, f.name) for f in fields(AppendPlan)})
        self._local.broken = True
        try:
            return super()._append(slow)
        finally:
            self._local.broken = False


Suite = Callable[[Callable[..., Awaitable[list[Store]]]], Awaitable[None]]


@pytest.mark.parametrize(
    "suite_test",
    [
        suite.test_shared_expected_seq_one_wins,
        suite.test_shared_concurrent_appends_are_dense,
        suite.test_shared_idempotent_retries_write_once,
    ],
    ids=["expected_seq", "dense", "idempotency"],
)
async def test_suite_fails_without_the_append_transaction(
    tmp_path: Path, suite_test: Suite
) -> None:
    opened: list[Store] = []

    async def make_peers(n: int = 2, config: object = None) -> list[Store]:
        for _ in range(n):
            opened.append(await NoTxSQLiteStore.open(tmp_path / "broken.db"))
        return opened

    try:
        with pytest.raises(BaseException) as caught:
            await suite_test(make_peers)
        assert not isinstance(caught.value, pytest.skip.Exception)
        print(f"the suite caught it: {type(caught.value).__name__}: {caught.value}"[:300])
    finally:
        for store in opened:
            await store.close()
