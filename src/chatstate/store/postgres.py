"""PostgreSQL backend: the system of record for fleets (``pip install 'chatstate[postgres]'``).

Open it with :meth:`PostgresStore.open` or ``open_store("postgresql://...")``. Tables are
keyed by ``(tenant_id, session_id)`` (see ``migrations/postgres/0001_init.sql``); one row
per event holds the codec's JSON text unchanged, so text round-trips byte for byte.

Every call is one transaction sent in pipeline mode, so it costs one or two round trips.
An append locks its session row (``SELECT ... FOR UPDATE``), so appends to a session are
totally ordered; the checks then run in the same order as the in-memory reference backend.
Times come from ``StoreConfig.clock``, never from the database's ``now()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import psycopg

from chatstate.errors import (
    AlreadyExists,
    BackendUnavailable,
    BranchNotFound,
    ChatstateError,
    IdempotencyMismatch,
    SeqConflict,
    SessionNotFound,
    StateVersionConflict,
    ValidationError,
)
from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Capabilities,
    Event,
    JSONValue,
    NewEvent,
    Page,
    Session,
    StateDoc,
)
from chatstate.store import _pg_sql as q
from chatstate.store._pg_pool import (
    Attempt,
    Conn,
    PoolSettings,
    Runner,
    display_url,
    make_pool,
    transaction,
)
from chatstate.store._pg_schema import check_row_level_security, prepare_schema, schema_version
from chatstate.store.codec import (
    decode_cursor,
    decode_event,
    dumps,
    encode_appends,
    encode_cursor,
    encode_state,
    fingerprint,
    loads,
)
from chatstate.store.lineage import clip_segments, lineage
from chatstate.store.protocol import Order
from chatstate.store.rules import (
    StoreConfig,
    check_fork_point,
    check_id,
    check_limit,
    check_metadata,
    check_metadata_filter,
    check_order,
    check_seq,
    check_ttl,
    ensure_live,
    expiry_after,
    from_us,
    new_session_id,
    to_us,
)

__all__ = ["PostgresStore", "migrate", "open_postgres_url"]

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


class PostgresStore:
    """A :class:`~chatstate.store.protocol.Store` on PostgreSQL. Use :meth:`open`."""

    def __init__(
        self, runner: Runner, config: StoreConfig, *, row_level_security: bool = False
    ) -> None:
        self._runner = runner
        self._config = config
        self._rls = row_level_security

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        config: StoreConfig | None = None,
        migrate: bool = False,
        schema: str | None = None,
        row_level_security: bool = False,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        retry_for: float = 5.0,
    ) -> PostgresStore:
        """Open a pool to ``url`` (a ``postgresql://`` URL or libpq conninfo) and check the
        schema.

        An empty schema is created at the newest version. An older one is refused with
        :class:`~chatstate.errors.SchemaMismatch` (its ``fix`` is the ``chatstate migrate``
        command) unless ``migrate=True``; a newer one is always refused. ``schema`` puts
        chatstate's tables in that PostgreSQL schema (it must exist). With
        ``row_level_security=True`` every transaction sets ``chatstate.tenant_id`` and the
        role must not own the tables (checked here). Unreachable servers raise
        :class:`~chatstate.errors.BackendUnavailable` after ``retry_for`` seconds.
        """
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise ValidationError("schema must be a lower-case identifier (a-z, 0-9, _)")
        settings = PoolSettings(
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            retry_for=retry_for,
            schema=schema,
        )
        runner = await _start(url, settings)
        try:
            fix = f"chatstate migrate --database-url {display_url(url)}"
            if schema is not None:
                fix += f" --schema {schema}"

            async def setup(conn: Conn, _attempt: Attempt) -> None:
                await prepare_schema(conn, migrate=migrate, fix=fix)
                if row_level_security:
                    await check_row_level_security(conn)

            await runner.run(setup)
        except BaseException:
            await runner.close()
            raise
        return cls(runner, config or StoreConfig(), row_level_security=row_level_security)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(durable=True, shared=True)

    async def schema_version(self) -> int:
        async def run(conn: Conn, _attempt: Attempt) -> int:
            return (await schema_version(conn))[0]

        return await self._runner.run(run)

    async def close(self) -> None:
        await self._runner.close()

    # -- plumbing -----------------------------------------------------------------------

    def _tx(
        self, conn: Conn, attempt: Attempt, tenant_id: str | None, *, read: bool = False
    ) -> AbstractAsyncContextManager[None]:
        return transaction(conn, attempt, tenant_id=tenant_id, rls=self._rls, read_only=read)

    def _ids(self, tenant_id: str, session_id: str) -> None:
        check_id(tenant_id, "tenant_id")
        check_id(session_id, "session_id")

    # -- sessions -----------------------------------------------------------------------

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        check_id(tenant_id, "tenant_id")
        session_id = new_session_id() if session_id is None else check_id(session_id, "session_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        check_metadata(metadata, self._config.limits)
        check_ttl(ttl_seconds)
        now = _exact(self._config.clock())
        meta = dumps(dict(metadata or {}))
        expires = expiry_after(ttl_seconds, now)
        params = {
            "t": tenant_id,
            "s": session_id,
            "user": user_id,
            "meta": meta,
            "ttl": ttl_seconds,
            "now": to_us(now),
            "exp": None if expires is None else to_us(expires),
        }

        async def run(conn: Conn, attempt: Attempt) -> None:
            async with self._tx(conn, attempt, tenant_id):
                cur = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                old = await cur.fetchone()
                if old is not None:
                    if old[6] is None or old[6] > to_us(now):
                        raise AlreadyExists(f"session {session_id!r} already exists")
                    await conn.execute(q.DROP_ONE, (tenant_id, session_id))  # expired: purge
                created = await conn.execute(q.CREATE_SESSION, params)
            if await created.fetchone() is None:  # created concurrently by another caller
                raise AlreadyExists(f"session {session_id!r} already exists")

        await self._runner.run(run, repeatable=False)
        return Session(
            tenant_id=tenant_id,
            id=session_id,
            created_at=now,
            updated_at=now,
            metadata=_object(meta),
            user_id=user_id,
            ttl_seconds=ttl_seconds,
            expires_at=None if expires is None else _exact(expires),
        )

    async def get_session(self, *, tenant_id: str, session_id: str) -> Session:
        self._ids(tenant_id, session_id)
        now = self._config.clock()

        async def run(conn: Conn, attempt: Attempt) -> Session:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.GET_SESSION, (tenant_id, session_id))
            return _live(tenant_id, session_id, await cur.fetchone(), now)

        return await self._runner.run(run)

    async def list_sessions(
        self,
        *,
        tenant_id: str,
        user_id: str | None = None,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Session]:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        check_metadata_filter(metadata)
        check_limit(limit, self._config.limits)
        now = self._config.clock()
        sql = q.LIST_SESSIONS + q.LIST_LIVE
        params: list[object] = [tenant_id, to_us(now)]
        if user_id is not None:
            sql += q.LIST_USER
            params.append(user_id)
        if cursor is not None:
            created, sid = decode_cursor(cursor, (int, str))
            sql += q.LIST_AFTER
            params += [created, sid]
        for key, value in (metadata or {}).items():
            sql += q.LIST_META
            params += [key, dumps(value)]
        sql += q.LIST_ORDER
        params.append(limit + 1)

        async def run(conn: Conn, attempt: Attempt) -> list[Session]:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(sql.encode(), params)
            return [_session(tenant_id, row) for row in await cur.fetchall()]

        rows = await self._runner.run(run)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(to_us(last.created_at), last.id)
        return Page(items=tuple(page), next_cursor=next_cursor)

    async def set_ttl(
        self, *, tenant_id: str, session_id: str, ttl_seconds: float | None
    ) -> Session:
        check_ttl(ttl_seconds)
        self._ids(tenant_id, session_id)
        now = self._config.clock()
        expires = expiry_after(ttl_seconds, now)

        async def run(conn: Conn, attempt: Attempt) -> Session:
            async with self._tx(conn, attempt, tenant_id):
                cur = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                _live(tenant_id, session_id, await cur.fetchone(), now)
                cur = await conn.execute(
                    q.SET_TTL,
                    (
                        ttl_seconds,
                        None if expires is None else to_us(expires),
                        to_us(now),
                        tenant_id,
                        session_id,
                    ),
                )
            return _session(tenant_id, _one(await cur.fetchone()))

        return await self._runner.run(run, repeatable=False)

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        self._ids(tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, tenant_id):
                await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                cur = await conn.execute(q.DROP_ONE, (tenant_id, session_id))
            return int(_one(await cur.fetchone())[0])

        if await self._runner.run(run, repeatable=False) == 0:
            raise SessionNotFound(f"session {session_id!r} not found")

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        args = (tenant_id,) if user_id is None else (tenant_id, user_id)

        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, tenant_id):
                await conn.execute(q.LOCK_TENANT if user_id is None else q.LOCK_USER, args)
                cur = await conn.execute(q.DROP_TENANT if user_id is None else q.DROP_USER, args)
            return int(_one(await cur.fetchone())[0])

        return await self._runner.run(run, repeatable=False)

    async def purge_expired(self) -> int:
        now = to_us(self._config.clock())
        horizon = now - int(self._config.idempotency_ttl_seconds * 1_000_000)

        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, None):
                cur = await conn.execute(q.PURGE, (now, horizon))
            return int(_one(await cur.fetchone())[0])

        return await self._runner.run(run)  # deleting the expired again is harmless

    # -- events -------------------------------------------------------------------------

    async def append(
        self,
        *,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str = DEFAULT_BRANCH,
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        check_id(branch, "branch")
        check_seq(expected_seq, "expected_seq", allow_none=True)
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key", max_len=255)
        encoded = encode_appends(events, self._config.limits)
        self._ids(tenant_id, session_id)
        now = _exact(self._config.clock())
        print_ = None if idempotency_key is None else fingerprint(branch, encoded)
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> AppendResult:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                lookup = await conn.execute(
                    q.APPEND_LOOKUP,
                    {"t": tenant_id, "s": session_id, "b": branch, "key": idempotency_key},
                )
                session = _live(tenant_id, session_id, await locked.fetchone(), now)
                head, *idem = _one(await lookup.fetchone())
                if head is None:
                    raise BranchNotFound(f"branch {branch!r} not found")
                if idem[0] is not None and (
                    (now - from_us(idem[4])).total_seconds() < self._config.idempotency_ttl_seconds
                ):
                    if idem[0] != print_:
                        raise IdempotencyMismatch(
                            f"idempotency key {idempotency_key!r} was used with another payload"
                        )
                    cur = await conn.execute(
                        q.EVENTS_ASC, (*key, idem[1], idem[2], idem[3], idem[3] - idem[2] + 1)
                    )
                    rows = await cur.fetchall()
                    return AppendResult(
                        branch=idem[1],
                        first_seq=idem[2],
                        last_seq=idem[3],
                        events=tuple(_event(row, idem[1]) for row in rows),
                        replayed=True,
                    )
                if expected_seq is not None and expected_seq != head:
                    raise SeqConflict(
                        f"expected seq {expected_seq}, branch {branch!r} is at {head}",
                        expected=expected_seq,
                        actual=head,
                    )
                expires = expiry_after(session.ttl_seconds, now)
                await conn.execute(
                    q.APPEND_WRITE,
                    {
                        "t": tenant_id,
                        "s": session_id,
                        "b": branch,
                        "head": head,
                        "now": to_us(now),
                        "tcs": [item.event.token_count for item in encoded],
                        "bodies": [item.body for item in encoded],
                        "key": idempotency_key,
                        "last": head + len(encoded),
                        "exp": None if expires is None else to_us(expires),
                        "fp": print_,
                        "first": head + 1,
                    },
                )
            return AppendResult(
                branch=branch,
                first_seq=head + 1,
                last_seq=head + len(encoded),
                events=tuple(
                    decode_event(
                        item.body,
                        seq=head + 1 + i,
                        branch=branch,
                        created_at=now,
                        token_count=item.event.token_count,
                        idempotency_key=idempotency_key,
                    )
                    for i, item in enumerate(encoded)
                ),
            )

        # With a key, a retry after a lost COMMIT replays instead of writing twice.
        return await self._runner.run(run, repeatable=idempotency_key is not None)

    async def read(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = DEFAULT_BRANCH,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        order: Order = "asc",
    ) -> list[Event]:
        check_id(branch, "branch")
        check_seq(after_seq, "after_seq")
        check_seq(before_seq, "before_seq", allow_none=True)
        check_limit(limit, self._config.limits)
        check_order(order)
        self._ids(tenant_id, session_id)
        now = self._config.clock()
        sql = q.EVENTS_DESC if order == "desc" else q.EVENTS_ASC

        async def run(conn: Conn, attempt: Attempt) -> list[Event]:
            parts: list[tuple[str, psycopg.AsyncCursor[Any]]] = []
            async with self._tx(conn, attempt, tenant_id, read=True):
                view = await conn.execute(q.VIEW, (tenant_id, session_id))
                branches = _branches(tenant_id, session_id, await view.fetchall(), now)
                if branch not in branches:
                    raise BranchNotFound(f"branch {branch!r} not found")
                segments = lineage(branches, branch)
                for seg in clip_segments(segments, after_seq, before_seq, order):
                    head = branches[seg.branch].head_seq
                    hi = head if seg.hi is None else min(seg.hi, head)
                    if seg.lo <= hi:
                        cur = await conn.execute(
                            sql, (tenant_id, session_id, seg.branch, seg.lo, hi, limit)
                        )
                        parts.append((seg.branch, cur))
            out: list[Event] = []
            for owner, cur in parts:
                out += [_event(row, owner) for row in await cur.fetchmany(limit - len(out))]
                if len(out) >= limit:
                    break
            return out

        return await self._runner.run(run)

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        events = await self.read(
            tenant_id=tenant_id, session_id=session_id, branch=branch, limit=n, order="desc"
        )
        events.reverse()
        return events

    # -- branches -----------------------------------------------------------------------

    async def fork(
        self,
        *,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str = DEFAULT_BRANCH,
        at_seq: int | None = None,
    ) -> Branch:
        check_id(new_branch, "new_branch")
        check_id(from_branch, "from_branch")
        check_seq(at_seq, "at_seq", allow_none=True)
        self._ids(tenant_id, session_id)
        now = _exact(self._config.clock())

        async def run(conn: Conn, attempt: Attempt) -> Branch:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                cur = await conn.execute(q.BRANCHES, (tenant_id, session_id))
                _live(tenant_id, session_id, await locked.fetchone(), now)
                heads = {name: (head, order) for name, head, order in await cur.fetchall()}
                if from_branch not in heads:
                    raise BranchNotFound(f"branch {from_branch!r} not found")
                if new_branch in heads:
                    raise AlreadyExists(f"branch {new_branch!r} already exists")
                parent_head = heads[from_branch][0]
                at = parent_head if at_seq is None else at_seq
                check_fork_point(at, parent_head)
                ordinal = max(order for _, order in heads.values()) + 1
                await conn.execute(
                    q.CREATE_BRANCH,
                    (tenant_id, session_id, new_branch, ordinal, from_branch, at, at, to_us(now)),
                )
            return Branch(
                name=new_branch, head_seq=at, created_at=now, parent=from_branch, fork_seq=at
            )

        return await self._runner.run(run, repeatable=False)

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        self._ids(tenant_id, session_id)
        now = self._config.clock()

        async def run(conn: Conn, attempt: Attempt) -> list[Branch]:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.VIEW, (tenant_id, session_id))
            return list(_branches(tenant_id, session_id, await cur.fetchall(), now).values())

        return await self._runner.run(run)

    # -- state --------------------------------------------------------------------------

    async def get_state(self, *, tenant_id: str, session_id: str) -> StateDoc:
        self._ids(tenant_id, session_id)
        now = self._config.clock()

        async def run(conn: Conn, attempt: Attempt) -> StateDoc:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.GET_STATE, (tenant_id, session_id))
            row = await cur.fetchone()
            _live(tenant_id, session_id, row, now)
            assert row is not None  # noqa: S101 - _live raised otherwise
            version, body, updated = row[7:10]
            if version is None:
                return StateDoc(version=0, data={})
            return StateDoc(version=version, data=_object(body), updated_at=from_us(updated))

        return await self._runner.run(run)

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
    ) -> StateDoc:
        check_seq(expected_version, "expected_version")
        body = encode_state(data, self._config.limits)
        self._ids(tenant_id, session_id)
        now = _exact(self._config.clock())
        key = (tenant_id, session_id)

        async def run(conn: Conn, attempt: Attempt) -> None:
            async with self._tx(conn, attempt, tenant_id):
                locked = await conn.execute(q.LOCK_SESSION, key)
                cur = await conn.execute(q.STATE_VERSION, key)
                _live(tenant_id, session_id, await locked.fetchone(), now)
                row = await cur.fetchone()
                version = 0 if row is None else int(row[0])
                if version != expected_version:
                    raise StateVersionConflict(
                        f"state is at version {version}, not {expected_version}",
                        expected=expected_version,
                        actual=version,
                    )
                await conn.execute(q.PUT_STATE, (*key, expected_version + 1, body, to_us(now)))

        await self._runner.run(run, repeatable=False)
        return StateDoc(version=expected_version + 1, data=_object(body), updated_at=now)


# -- rows to values ---------------------------------------------------------------------


def _exact(moment: datetime) -> datetime:
    """``moment`` as it will read back: UTC, whole microseconds."""
    return from_us(to_us(moment))


def _one(row: Sequence[Any] | None) -> Sequence[Any]:
    if row is None:
        raise ChatstateError("PostgreSQL returned no row where one was expected")
    return row


def _object(text: str) -> dict[str, JSONValue]:
    value = loads(text)
    if not isinstance(value, dict):
        raise ChatstateError("stored JSON is not an object")
    return value


def _session(tenant_id: str, row: Sequence[Any]) -> Session:
    sid, user_id, meta, ttl, created, updated, expires = row[:7]
    return Session(
        tenant_id=tenant_id,
        id=sid,
        created_at=from_us(created),
        updated_at=from_us(updated),
        metadata=_object(meta),
        user_id=user_id,
        ttl_seconds=ttl,
        expires_at=None if expires is None else from_us(expires),
    )


def _live(tenant_id: str, session_id: str, row: Sequence[Any] | None, now: datetime) -> Session:
    """The session in ``row``, or ``SessionNotFound``/``SessionExpired``."""
    if row is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    return ensure_live(_session(tenant_id, row), now)


def _branches(
    tenant_id: str, session_id: str, rows: Sequence[Sequence[Any]], now: datetime
) -> dict[str, Branch]:
    """The branches of a ``VIEW`` result, main first, after checking the session."""
    _live(tenant_id, session_id, rows[0] if rows else None, now)
    return {
        row[7]: Branch(
            name=row[7],
            head_seq=row[8],
            created_at=from_us(row[11]),
            parent=row[9],
            fork_seq=row[10],
        )
        for row in rows
        if row[7] is not None
    }


def _event(row: Sequence[Any], branch: str) -> Event:
    seq, created, token_count, key, body = row
    return decode_event(
        body,
        seq=seq,
        branch=branch,
        created_at=from_us(created),
        token_count=token_count,
        idempotency_key=key,
    )


# -- entry points -----------------------------------------------------------------------


async def open_postgres_url(url: str, config: StoreConfig) -> PostgresStore:
    """``postgresql://`` / ``postgres://`` for :func:`chatstate.store.url.open_store`.

    An empty database is set up; an older schema is refused (run ``chatstate migrate``).
    """
    return await PostgresStore.open(url, config=config)


async def migrate(url: str, *, schema: str | None = None) -> list[int]:
    """Apply pending migrations to the database at ``url``; return the versions applied.

    Safe to run from several processes at once (they take turns on an advisory lock). For
    the ``chatstate migrate`` command. A schema newer than this code raises SchemaMismatch.
    """
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ValidationError("schema must be a lower-case identifier (a-z, 0-9, _)")
    runner = await _start(url, PoolSettings(min_size=1, max_size=1, schema=schema))
    try:
        return await runner.run(_migrate_now, repeatable=False)
    finally:
        await runner.close()


async def _migrate_now(conn: Conn, _attempt: Attempt) -> list[int]:
    return await prepare_schema(conn, migrate=True, fix="")


async def _start(url: str, settings: PoolSettings) -> Runner:
    """An open pool to ``url``, or BackendUnavailable once ``retry_for`` has passed."""
    try:
        pool = make_pool(url, settings)
    except psycopg.ProgrammingError:
        raise ValidationError(f"invalid PostgreSQL URL {display_url(url)!r}") from None
    runner = Runner(pool, url, settings)
    try:
        await pool.open(wait=True, timeout=max(settings.retry_for, settings.connect_timeout))
    except psycopg.Error as exc:
        await runner.close()
        raise BackendUnavailable(
            f"PostgreSQL at {display_url(url)} is unavailable: {type(exc).__name__}: {exc}"
        ) from exc
    return runner
