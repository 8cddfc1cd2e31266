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
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode

import psycopg

from chatstate.errors import AlreadyExists, BackendUnavailable, ValidationError
from chatstate.model import Capabilities, Session
from chatstate.store.backends.postgres import sql as q
from chatstate.store.backends.postgres.log import LogMethods
from chatstate.store.backends.postgres.pool import (
    Attempt,
    Conn,
    PoolSettings,
    Runner,
    display_url,
    make_pool,
)
from chatstate.store.backends.postgres.rows import json_object, live, one, session_of
from chatstate.store.backends.postgres.schema import (
    check_row_level_security,
    prepare_schema,
    schema_version,
)
from chatstate.store.codec import dumps
from chatstate.store.front import MetadataFilter, NewSession, live_until
from chatstate.store.rules import StoreConfig, to_us

__all__ = ["PostgresStore", "migrate", "open_postgres_url"]

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


class PostgresStore(LogMethods):
    """A :class:`~chatstate.store.protocol.Store` on PostgreSQL. Use :meth:`open`.

    Sessions are handled here; the log (append, read, fork, state) in ``log.py``.
    """

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
                await check_row_level_security(conn, wanted=row_level_security)

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

    async def _p_close(self) -> None:
        await self._runner.close()

    # -- sessions -----------------------------------------------------------------------

    async def _p_create(self, new: NewSession) -> Session:
        tenant_id, session_id = new.tenant_id, new.session_id
        params = {
            "t": tenant_id,
            "s": session_id,
            "user": new.user_id,
            "meta": new.metadata_json,
            "ttl": new.ttl_seconds,
            "now": to_us(new.now),
            "exp": None if new.expires_at is None else to_us(new.expires_at),
        }

        async def run(conn: Conn, attempt: Attempt) -> None:
            async with self._tx(conn, attempt, tenant_id):
                cur = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                old = await cur.fetchone()
                if old is not None:
                    if live_until(old[6], new.now):
                        raise AlreadyExists(f"session {session_id!r} already exists")
                    await conn.execute(q.DROP_ONE, (tenant_id, session_id))  # expired: purge
                created = await conn.execute(q.CREATE_SESSION, params)
            if await created.fetchone() is None:  # created concurrently by another caller
                raise AlreadyExists(f"session {session_id!r} already exists")

        await self._runner.run(run, repeatable=False)
        return Session(
            tenant_id=tenant_id,
            id=session_id,
            created_at=new.now,
            updated_at=new.now,
            metadata=json_object(new.metadata_json),
            user_id=new.user_id,
            ttl_seconds=new.ttl_seconds,
            expires_at=new.expires_at,
        )

    async def _p_get(self, tenant_id: str, session_id: str, now: datetime) -> Session:
        async def run(conn: Conn, attempt: Attempt) -> Session:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(q.GET_SESSION, (tenant_id, session_id))
            return live(tenant_id, session_id, await cur.fetchone(), now)

        return await self._runner.run(run)

    async def _p_list(
        self,
        tenant_id: str,
        user_id: str | None,
        metadata: MetadataFilter,
        limit: int,
        after: tuple[int, str] | None,
        now: datetime,
    ) -> list[Session]:
        sql = q.LIST_SESSIONS + q.LIST_LIVE
        params: list[object] = [tenant_id, to_us(now)]
        if user_id is not None:
            sql += q.LIST_USER
            params.append(user_id)
        if after is not None:
            sql += q.LIST_AFTER
            params += [after[0], after[1]]
        for key, value in metadata.items():
            sql += q.LIST_META
            params += [key, dumps(value)]
        sql += q.LIST_ORDER
        params.append(limit)

        async def run(conn: Conn, attempt: Attempt) -> list[Session]:
            async with self._tx(conn, attempt, tenant_id, read=True):
                cur = await conn.execute(sql.encode(), params)
            return [session_of(tenant_id, row) for row in await cur.fetchall()]

        return await self._runner.run(run)

    async def _p_set_ttl(
        self,
        tenant_id: str,
        session_id: str,
        ttl_seconds: float | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> Session:
        expires = None if expires_at is None else to_us(expires_at)

        async def run(conn: Conn, attempt: Attempt) -> Session:
            async with self._tx(conn, attempt, tenant_id):
                cur = await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                live(tenant_id, session_id, await cur.fetchone(), now)
                cur = await conn.execute(
                    q.SET_TTL, (ttl_seconds, expires, to_us(now), tenant_id, session_id)
                )
            return session_of(tenant_id, one(await cur.fetchone()))

        return await self._runner.run(run, repeatable=False)

    async def _p_delete(self, tenant_id: str, session_id: str) -> bool:
        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, tenant_id):
                await conn.execute(q.LOCK_SESSION, (tenant_id, session_id))
                cur = await conn.execute(q.DROP_ONE, (tenant_id, session_id))
            return int(one(await cur.fetchone())[0])

        return await self._runner.run(run, repeatable=False) > 0

    async def _p_delete_many(self, tenant_id: str, user_id: str | None) -> int:
        args = (tenant_id,) if user_id is None else (tenant_id, user_id)

        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, tenant_id):
                await conn.execute(q.LOCK_TENANT if user_id is None else q.LOCK_USER, args)
                cur = await conn.execute(q.DROP_TENANT if user_id is None else q.DROP_USER, args)
            return int(one(await cur.fetchone())[0])

        return await self._runner.run(run, repeatable=False)

    async def _p_purge(self, now: datetime, idem_horizon_us: int) -> int:
        async def run(conn: Conn, attempt: Attempt) -> int:
            async with self._tx(conn, attempt, None):
                cur = await conn.execute(q.PURGE, (to_us(now), idem_horizon_us))
            return int(one(await cur.fetchone())[0])

        return await self._runner.run(run)  # deleting the expired again is harmless


# -- entry points -----------------------------------------------------------------------


async def open_postgres_url(url: str, config: StoreConfig) -> PostgresStore:
    """``postgresql://`` / ``postgres://`` for :func:`chatstate.store.url.open_store`.

    An empty database is set up; an older schema is refused (run ``chatstate migrate``).
    Besides libpq's own parameters the query may carry chatstate's: ``migrate=1``,
    ``schema=NAME``, ``row_level_security=1`` and ``pool_max_size=N``.
    """
    base, options = _split_url(url)
    size = options.get("pool_max_size", "10")
    if not size.isdigit() or int(size) < 1:
        raise ValidationError("pool_max_size must be a positive integer")
    return await PostgresStore.open(
        base,
        config=config,
        migrate=_flag(options, "migrate"),
        schema=options.get("schema"),
        row_level_security=_flag(options, "row_level_security"),
        max_size=int(size),
    )


_URL_OPTIONS = frozenset({"migrate", "schema", "row_level_security", "pool_max_size"})


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """Take chatstate's options out of the URL's query; libpq gets the rest."""
    base, _, query = url.partition("?")
    if not query:
        return url, {}
    pairs = parse_qsl(query, keep_blank_values=True)
    rest = [(k, v) for k, v in pairs if k not in _URL_OPTIONS]
    ours = {k: v for k, v in pairs if k in _URL_OPTIONS}
    return (f"{base}?{urlencode(rest, quote_via=quote)}" if rest else base), ours


def _flag(options: Mapping[str, str], name: str) -> bool:
    value = options.get(name, "").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValidationError(f"{name} must be 1 or 0, not {value!r}")


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
