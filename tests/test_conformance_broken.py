"""The conformance suite must catch a backend whose append is not atomic.

``NoTxSQLiteStore`` is SQLite with ``BEGIN IMMEDIATE``/``COMMIT`` removed from its append
(every statement then commits on its own), and a short pause between the lookups and the
writes so that the race it opens is met on every run rather than by luck.
``NoTxPostgresStore`` is PostgreSQL with its append's transaction removed: no ``BEGIN``/
``COMMIT``, so on the pool's autocommit connections the session row lock
(``SELECT ... FOR UPDATE``) ends with the statement that took it, and the head lookup and
the write are two transactions; a short pause (on the event loop) sits between them.

The suite's cross-instance atomicity tests run against two such stores on one database
and must fail; against the real backends they pass (they are part of the normal
conformance run). Under ``CI=true`` the PostgreSQL half runs or fails, never skips.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chatstate.store.backends.sqlite.store import SQLiteStore
from chatstate.store.front import Appended, AppendPlan, IdemRecord
from chatstate.store.protocol import Store
from chatstate.testing import conformance_shared as suite
from chatstate.testing.backends_postgres import create_schema, drop_schema, server_url
from chatstate.testing.backends_redis import require

if TYPE_CHECKING:
    from chatstate.store.backends.postgres.pool import Attempt, Conn


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
ATOMICITY = pytest.mark.parametrize(
    "suite_test",
    [
        suite.test_shared_expected_seq_one_wins,
        suite.test_shared_concurrent_appends_are_dense,
        suite.test_shared_idempotent_retries_write_once,
    ],
    ids=["expected_seq", "dense", "idempotency"],
)


async def _expect_failure(
    suite_test: Suite, make_peers: Callable[..., Awaitable[list[Store]]]
) -> None:
    with pytest.raises(BaseException) as caught:
        await suite_test(make_peers)
    assert not isinstance(caught.value, pytest.skip.Exception)
    print(f"the suite caught it: {type(caught.value).__name__}: {caught.value}"[:300])


@ATOMICITY
async def test_suite_fails_without_the_append_transaction(
    tmp_path: Path, suite_test: Suite
) -> None:
    opened: list[Store] = []

    async def make_peers(n: int = 2, config: object = None) -> list[Store]:
        for _ in range(n):
            opened.append(await NoTxSQLiteStore.open(tmp_path / "broken.db"))
        return opened

    try:
        await _expect_failure(suite_test, make_peers)
    finally:
        for store in opened:
            await store.close()


# -- PostgreSQL -------------------------------------------------------------------------

_BROKEN: ContextVar[bool] = ContextVar("broken_append", default=False)


@asynccontextmanager
async def _no_transaction() -> AsyncIterator[None]:
    yield  # no BEGIN, no COMMIT: each statement commits (and drops its locks) on its own


def _no_tx_postgres(*, broken: bool = True) -> type[Store]:
    """``NoTxPostgresStore``, built on first use (psycopg is an optional extra). With
    ``broken=False`` it is the real backend (the control: the suite passes)."""
    from chatstate.store.backends.postgres.store import PostgresStore

    class NoTxPostgresStore(PostgresStore):
        def _tx(
            self, conn: Conn, attempt: Attempt, tenant_id: str | None, *, read: bool = False
        ) -> AbstractAsyncContextManager[None]:
            if _BROKEN.get() and not read:
                return _no_transaction()
            return super()._tx(conn, attempt, tenant_id, read=read)

        async def _p_append(self, plan: AppendPlan) -> Appended:
            token = _BROKEN.set(broken)
            try:
                return await super()._p_append(plan)
            finally:
                _BROKEN.reset(token)

    return NoTxPostgresStore


async def _run_on_postgres(suite_test: Suite, *, broken: bool) -> None:
    require("postgres")  # skipped with its reason, or failed under CI=true, when unreachable
    store_class: Any = _no_tx_postgres(broken=broken)
    schema = await create_schema()
    opened: list[Store] = []

    async def make_peers(n: int = 2, config: object = None) -> list[Store]:
        for _ in range(n):
            opened.append(await store_class.open(server_url(), schema=schema, max_size=4))
        return opened

    try:
        if broken:
            await _expect_failure(suite_test, make_peers)
        else:
            await suite_test(make_peers)
    finally:
        for store in opened:
            await store.close()
        await drop_schema(schema)


@ATOMICITY
async def test_suite_fails_without_the_postgres_append_transaction(suite_test: Suite) -> None:
    await _run_on_postgres(suite_test, broken=True)


@ATOMICITY
async def test_the_same_postgres_subclass_with_its_transaction_passes(suite_test: Suite) -> None:
    """The control: only the removed transaction makes the suite fail above."""
    await _run_on_postgres(suite_test, broken=False)
