"""Connections to PostgreSQL: the pool, its timeouts, retries, and the one boundary where
driver errors become chatstate errors.

Every store call runs as ``Runner.run(fn)``: it borrows a pooled connection, runs ``fn``
(which opens one transaction with :func:`transaction`), and translates what the driver
raised. A lost connection is retried with bounded, jittered backoff for ``retry_for``
seconds and then raised as :class:`BackendUnavailable`. A connection lost while COMMIT
was in flight leaves the outcome unknown; only calls that are safe to repeat (reads, and
appends with an idempotency key, which replay) are retried then.

Cancellation: a task cancelled mid-query makes psycopg cancel the query on the server;
the pool then rolls back an open transaction or closes a connection still busy, so no
connection goes back to the pool with an unread result or an open transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chatstate.errors import BackendUnavailable, ChatstateError, SchemaMismatch
from chatstate.store.url import redact

__all__ = ["Attempt", "Conn", "PoolSettings", "Runner", "display_url", "transaction"]

log = logging.getLogger("chatstate.store.postgres")

R = TypeVar("R")
Conn = psycopg.AsyncConnection[TupleRow]

_BEGIN = b"BEGIN"
_BEGIN_READ = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"
_SET_TENANT = b"SELECT set_config('chatstate.tenant_id', %s, true)"

# SQLSTATEs that mean "the server went away or is not accepting work right now".
_LOST_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool size and the timeouts that keep every call bounded (seconds)."""

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    """libpq ``connect_timeout`` for each new connection."""
    statement_timeout: float = 30.0
    """Server-side limit for one statement, lock waits included."""
    retry_for: float = 5.0
    """How long a call keeps retrying a lost connection before BackendUnavailable."""
    schema: str | None = None
    """Schema for chatstate's tables (``search_path``); ``None`` keeps the server's."""


def display_url(url: str) -> str:
    """The connection target without its password, for messages and logs."""
    if "://" in url:
        return redact(url)
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable conninfo>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def make_pool(url: str, settings: PoolSettings) -> AsyncConnectionPool[Conn]:
    """A closed pool; open it with ``await pool.open(wait=True, timeout=...)``."""
    given = conninfo_to_dict(url)
    options = [
        f"-c statement_timeout={int(settings.statement_timeout * 1000)}",
        f"-c idle_in_transaction_session_timeout={int(settings.statement_timeout * 2000)}",
    ]
    if settings.schema is not None:
        options.append(f"-c search_path={settings.schema}")
    if given.get("options"):
        options.append(str(given["options"]))  # the caller's settings win: they come last
    kwargs: dict[str, object] = {"autocommit": True, "options": " ".join(options)}
    defaults: dict[str, object] = {
        "connect_timeout": max(2, round(settings.connect_timeout)),
        "application_name": "chatstate",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    for key, value in defaults.items():
        if key not in given:
            kwargs[key] = value
    return AsyncConnectionPool(
        url,
        min_size=settings.min_size,
        max_size=settings.max_size,
        kwargs=kwargs,
        open=False,
        timeout=settings.retry_for,
        name="chatstate",
    )


class Attempt:
    """One try of a store call; ``committing`` is set once COMMIT may be on the wire."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


@asynccontextmanager
async def transaction(
    conn: Conn, attempt: Attempt, *, tenant_id: str | None, rls: bool, read_only: bool = False
) -> AsyncIterator[None]:
    """One transaction in pipeline mode: statements queue up and travel together.

    Reading a cursor inside the block sends what is queued and waits for that result;
    results of cursors not read inside are available after the block, which sends COMMIT
    and waits for everything. Read-only transactions see one snapshot (REPEATABLE READ).
    With ``rls`` the tenant is set for this transaction only (``set_config(..., true)``),
    so a pooled connection never carries it into the next call.
    """
    async with conn.pipeline():
        await conn.execute(_BEGIN_READ if read_only else _BEGIN)
        if rls:
            await conn.execute(_SET_TENANT, (tenant_id or "",))
        try:
            yield
        except Exception:
            with suppress(psycopg.Error):
                await conn.execute(_ROLLBACK)
            raise
        attempt.committing = True
        await conn.execute(_COMMIT)


def _is_lost(exc: psycopg.Error) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, pg_errors.PipelineAborted):
        return False  # only follows the error that aborted the pipeline
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return exc.sqlstate.startswith("08") or exc.sqlstate in _LOST_STATES


def _quiet(task: asyncio.Task[None]) -> None:
    """Retrieve a background check's outcome; its failures show in the calls that follow."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("pool check failed: %r", task.exception())


class Runner:
    """Runs store calls on the pool with retries and error translation."""

    def __init__(self, pool: AsyncConnectionPool[Conn], url: str, settings: PoolSettings) -> None:
        self.pool = pool
        self._where = display_url(url)
        self._settings = settings
        self._checking: asyncio.Task[None] | None = None

    async def run(
        self, fn: Callable[[Conn, Attempt], Awaitable[R]], *, repeatable: bool = True
    ) -> R:
        """Run ``fn`` on a pooled connection. ``repeatable``: safe to rerun after a
        connection lost during COMMIT (the call replays or only reads)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.retry_for
        # A wedged server cannot hold a call forever: the statement timeout is the server's
        # promise, this is ours (psycopg then cancels the query, bounded as well).
        limit = self._settings.retry_for + self._settings.statement_timeout * 2 + 5
        try:
            async with asyncio.timeout(limit):
                return await self._attempts(fn, deadline, repeatable=repeatable)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self._where} did not answer within {limit:.0f}s"
            ) from exc

    async def _attempts(
        self, fn: Callable[[Conn, Attempt], Awaitable[R]], deadline: float, *, repeatable: bool
    ) -> R:
        loop = asyncio.get_running_loop()
        delay = 0.05
        tries = 0
        while True:
            tries += 1
            attempt = Attempt()
            try:
                wait = max(deadline - loop.time(), 0.05)
                async with self.pool.connection(timeout=wait) as conn:
                    return await fn(conn, attempt)
            except ChatstateError:
                raise
            except psycopg.Error as exc:
                lost = _is_lost(exc)
                retry = isinstance(exc, pg_errors.TransactionRollback) or (
                    lost and (repeatable or not attempt.committing)
                )
                if retry and loop.time() + delay < deadline:
                    log.warning(
                        "PostgreSQL call failed (%s), retry %d in %.2fs",
                        type(exc).__name__,
                        tries,
                        delay,
                    )
                    if lost:
                        self._check_pool()
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
                    delay = min(delay * 2, 1.0)
                    continue
                raise self._translate(exc, tries, attempt.committing and lost) from exc

    def _check_pool(self) -> None:
        """Drop broken idle connections in the background (after a server restart)."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self.pool.check())
            self._checking.add_done_callback(_quiet)

    def _translate(self, exc: psycopg.Error, tries: int, unknown: bool) -> ChatstateError:
        kind = type(exc).__name__
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        if unknown:
            return BackendUnavailable(
                f"PostgreSQL at {self._where}: the connection was lost while committing; "
                f"the write may or may not have been applied ({kind})"
            )
        if _is_lost(exc) or isinstance(
            exc,
            pg_errors.QueryCanceled | pg_errors.LockNotAvailable | pg_errors.TransactionRollback,
        ):
            return BackendUnavailable(
                f"PostgreSQL at {self._where} is unavailable after {tries} attempt(s): "
                f"{kind}: {first_line}"
            )
        if isinstance(
            exc, pg_errors.UndefinedTable | pg_errors.UndefinedFunction | pg_errors.UndefinedColumn
        ):
            return SchemaMismatch(
                f"PostgreSQL at {self._where} lacks chatstate's schema ({first_line})",
                fix=f"chatstate migrate --database-url {self._where}",
            )
        return ChatstateError(f"PostgreSQL error {exc.sqlstate or kind}: {first_line}")

    async def close(self) -> None:
        if self._checking is not None and not self._checking.done():
            self._checking.cancel()
            with suppress(asyncio.CancelledError, psycopg.Error):
                await self._checking
        await self.pool.close()
