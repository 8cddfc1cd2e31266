"""The SQLite backend's machinery: connections, the worker thread, migrations and the read
path. :mod:`chatstate.store.backends.sqlite.store` builds the store on it."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

from chatstate.errors import (
    AlreadyExists,
    BackendUnavailable,
    BranchNotFound,
    ChatstateError,
    SessionNotFound,
    ValidationError,
)
from chatstate.model import (
    Branch,
    Capabilities,
    Event,
    JSONValue,
    SeqRange,
    Session,
)
from chatstate.store.backends.sqlite.worker import Worker
from chatstate.store.codec import (
    decode_event,
    loads,
)
from chatstate.store.front import StoreFront
from chatstate.store.lineage import plan_range
from chatstate.store.migrations import load_migrations, plan
from chatstate.store.rules import (
    StoreConfig,
    ensure_live,
    from_us,
    to_us,
)

__all__ = [
    "INLINE_READ_LIMIT",
    "SEQ_BITS",
    "SESSION_COLS",
    "SQLiteCore",
    "Synchronous",
    "event_id",
    "json_obj",
    "session_from_row",
    "statements",
    "translate",
]


log = logging.getLogger("chatstate.store.sqlite")

Synchronous = Literal["normal", "full"]
P = ParamSpec("P")
R = TypeVar("R")

SEQ_BITS = 32
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes the WAL file is cut back to after a checkpoint."""
INLINE_READ_LIMIT = 64
"""Reads of at most this many events run on the caller's thread (see ``_read_inline``)."""
SESSION_COLS = (
    "sid, tenant_id, session_id, user_id, metadata, created_us, updated_us, ttl_seconds, "
    "expires_us, default_branch"
)


_READ = "SELECT id, created_us, token_count, idempotency_key, body FROM events "
_READ_ASC = _READ + "WHERE id BETWEEN ? AND ? ORDER BY id ASC LIMIT ?"
_READ_DESC = _READ + "WHERE id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?"


def event_id(bid: int, seq: int) -> int:
    return (bid << SEQ_BITS) | seq


class SQLiteCore(StoreFront):
    """Connection handling and reads under :class:`.store.SQLiteStore`."""

    def __init__(
        self,
        path: str | Path,
        *,
        config: StoreConfig | None = None,
        synchronous: Synchronous = "normal",
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValidationError("synchronous must be 'normal' or 'full'")
        super().__init__(config)
        self._path = str(path)
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._worker = Worker("chatstate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(durable=True, shared=True)

    @property
    def path(self) -> str:
        return self._path

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._worker.call(lambda: self._guard(fn, args, kwargs))

    def _guard(
        self, fn: Callable[..., R], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.rollback()
            raise translate(exc) from exc
        except BaseException:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.rollback()
            raise

    def _connect(self, migrate: bool) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        # A new database gets 8 KiB pages (an existing one keeps its own): chat rows of
        # 0.5-2 KB left about 15% of each 4 KiB page unused (measured with dbstat on the
        # bench's 1,000-turn log: 2.02x the raw text on disk at 4 KiB, 1.47x at 8 KiB
        # with the summaries' fold ratio of 8). Set before WAL, which fixes the size.
        conn.execute("PRAGMA page_size = 8192")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal" and self._path != ":memory:":
            log.warning("SQLite could not enable WAL (journal_mode=%s)", mode)
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        # Erasure: deleted rows are overwritten with zeros, not left in free pages, and the
        # WAL shrinks back to this size after a checkpoint (see ``_checkpoint``).
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        self._migrate(migrate)
        if self._path != ":memory:" and mode.lower() == "wal":
            reader = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=0
            )
            reader.execute("PRAGMA busy_timeout = 0")
            reader.execute("PRAGMA query_only = 1")
            self._reader = reader

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendUnavailable("the SQLite store is closed")
        return self._conn

    def _migrate(self, migrate: bool) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            current = 0
            if "schema_migrations" in tables:
                current = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                ).fetchone()[0]
            pending = plan(
                current,
                load_migrations("sqlite"),
                empty=not tables,
                migrate=migrate,
                fix=f"chatstate migrate --database-url sqlite:///{self._path}",
            )
            if "schema_migrations" not in tables:
                db.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_us INTEGER NOT NULL)"
                )
            for migration in pending:
                for statement in statements(migration.sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, to_us(self._config.clock())),
                )
                log.info("applied SQLite migration %04d_%s", migration.version, migration.name)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after an erase, so that no
        old page holding deleted text stays in the WAL). Best effort: a reader in another
        process holding an old snapshot makes SQLite skip the truncation; the next
        erase, or SQLite's own checkpoints, finish it."""
        if self._path == ":memory:":
            return
        row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row is not None and row[0]:
            log.info("WAL checkpoint after an erase was blocked by a reader; retried later")

    async def schema_version(self) -> int:
        return await self._call(
            lambda: int(
                self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
            )
        )

    async def _p_close(self) -> None:
        if self._reader is not None:
            with self._reader_lock:
                self._reader.close()
                self._reader = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._worker.call(conn.close)
        self._worker.stop()

    # -- lookups (run in the worker thread) ---------------------------------------------

    def _session_row(
        self, tenant_id: str, session_id: str, db: sqlite3.Connection | None = None
    ) -> tuple[int, Session]:
        row = (
            (db or self._db)
            .execute(
                f"SELECT {SESSION_COLS} FROM sessions WHERE tenant_id = ? AND session_id = ?",  # noqa: S608
                (tenant_id, session_id),
            )
            .fetchone()
        )
        if row is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        session = session_from_row(row)
        ensure_live(session, self._config.clock())
        return row[0], session

    def _branches(
        self, sid: int, db: sqlite3.Connection | None = None
    ) -> dict[str, tuple[int, Branch]]:
        rows = (
            (db or self._db)
            .execute(
                "SELECT bid, name, head_seq, created_us, parent, fork_seq FROM branches "
                "WHERE sid = ? ORDER BY bid",
                (sid,),
            )
            .fetchall()
        )
        return {
            r[1]: (
                r[0],
                Branch(
                    name=r[1], head_seq=r[2], created_at=from_us(r[3]), parent=r[4], fork_seq=r[5]
                ),
            )
            for r in rows
        }

    def _read_view(
        self,
        branches: Mapping[str, tuple[int, Branch]],
        branch: str,
        rng: SeqRange,
        db: sqlite3.Connection | None = None,
    ) -> list[Event]:
        infos = {name: info for name, (_, info) in branches.items()}
        out: list[Event] = []
        sql = _READ_ASC if rng.order == "asc" else _READ_DESC
        mask = (1 << SEQ_BITS) - 1
        for seg in plan_range(infos, branch, rng):
            bid = branches[seg.branch][0]
            rows = (
                (db or self._db)
                .execute(
                    sql, (event_id(bid, seg.lo), event_id(bid, seg.hi or 0), rng.limit - len(out))
                )
                .fetchall()
            )
            out += [
                decode_event(
                    r[4],
                    seq=r[0] & mask,
                    branch=seg.branch,
                    created_at=from_us(r[1]),
                    token_count=r[2],
                    idempotency_key=r[3],
                )
                for r in rows
            ]
            if len(out) >= rng.limit:
                break
        return out

    def _read(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        ranges: tuple[SeqRange, ...],
        db: sqlite3.Connection | None = None,
    ) -> list[list[Event]]:
        conn = db or self._db
        conn.execute("BEGIN")  # one snapshot for the branch table and the events
        try:
            sid, _ = self._session_row(tenant_id, session_id, conn)
            branches = self._branches(sid, conn)
            if branch not in branches:
                raise BranchNotFound(f"branch {branch!r} not found")
            return [self._read_view(branches, branch, rng, db=conn) for rng in ranges]
        finally:
            conn.execute("COMMIT")

    def _read_inline(
        self, tenant_id: str, session_id: str, branch: str, ranges: tuple[SeqRange, ...]
    ) -> list[list[Event]] | None:
        """A small read on the caller's thread (:meth:`_inline`), or ``None`` to use the
        worker thread."""
        if sum(r.limit for r in ranges) > INLINE_READ_LIMIT:
            return None
        return self._inline(lambda db: self._read(tenant_id, session_id, branch, ranges, db))

    def _inline(self, fn: Callable[[sqlite3.Connection], R]) -> R | None:
        """``fn`` on the read-only connection, on the caller's thread, or ``None`` to use
        the worker thread.

        WAL readers never wait for writers, so a small read costs less than the hop to
        the worker thread. The reader connection has ``busy_timeout=0``: if SQLite would
        make it wait (recovery, another thread using it), we give up at once and the
        worker thread does the read instead. ``fn`` is left no open transaction.
        """
        reader = self._reader
        if reader is None or not self._reader_lock.acquire(False):
            return None
        try:
            return fn(reader)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            raise translate(exc) from exc
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            if reader.in_transaction:
                reader.rollback()
            self._reader_lock.release()


def session_from_row(row: tuple[object, ...]) -> Session:
    _, tenant, sid, user, meta, created, updated, ttl, expires, default = row
    return Session(
        tenant_id=str(tenant),
        id=str(sid),
        created_at=from_us(int(created)),  # type: ignore[call-overload]
        updated_at=from_us(int(updated)),  # type: ignore[call-overload]
        metadata=json_obj(str(meta)),
        user_id=None if user is None else str(user),
        ttl_seconds=None if ttl is None else float(ttl),  # type: ignore[arg-type]
        expires_at=None if expires is None else from_us(int(expires)),  # type: ignore[call-overload]
        default_branch=str(default),
    )


def json_obj(text: str) -> dict[str, JSONValue]:
    value = loads(text)
    if not isinstance(value, dict):
        raise ValidationError("stored document is not a JSON object")
    return value


def statements(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside our literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def translate(exc: sqlite3.Error) -> ChatstateError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return BackendUnavailable(f"SQLite database is busy: {text}")
    if "full" in text or "disk I/O" in text or "readonly" in text:
        return BackendUnavailable(f"SQLite cannot write: {text}")
    if isinstance(exc, sqlite3.IntegrityError):
        return AlreadyExists(f"SQLite constraint: {text}")
    return BackendUnavailable(f"SQLite error: {text}")
