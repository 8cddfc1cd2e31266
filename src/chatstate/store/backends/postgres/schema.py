"""PostgreSQL schema versions and the row-level security check. Used by ``store.py``.

Migrations are the numbered files in ``store/migrations/postgres``, applied by the shared
rule in :mod:`chatstate.store.migrations`: all pending ones in one transaction, holding a
transaction-scoped advisory lock keyed by the schema, so two processes that migrate at once
take turns and the second finds nothing left to do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from chatstate.errors import ValidationError
from chatstate.store.backends.postgres.pool import Conn
from chatstate.store.migrations import load_migrations, plan
from chatstate.store.rules import to_us

__all__ = ["TABLES", "check_row_level_security", "latest_version", "prepare_schema"]

log = logging.getLogger("chatstate.store.postgres")

TABLES = ("sessions", "branches", "events", "idempotency", "state")

_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('chatstate.migrate:' || coalesce(current_schema(), '')))"
)
_PROBE = "SELECT to_regclass('schema_migrations') IS NOT NULL, to_regclass('sessions') IS NOT NULL"
_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"
_CREATE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version integer PRIMARY KEY, name text NOT NULL, applied_us bigint NOT NULL)"
)
_RECORD = "INSERT INTO schema_migrations (version, name, applied_us) VALUES (%s, %s, %s)"


def latest_version() -> int:
    return load_migrations("postgres")[-1].version


async def schema_version(conn: Conn) -> tuple[int, bool]:
    """The schema version in place, and whether chatstate has no tables here at all."""
    cur = await conn.execute(_PROBE)
    row = await cur.fetchone()
    has_ledger, has_sessions = bool(row and row[0]), bool(row and row[1])
    if not has_ledger:
        return 0, not has_sessions
    cur = await conn.execute(_VERSION)
    row = await cur.fetchone()
    current = int(row[0]) if row else 0
    return current, current == 0 and not has_sessions


async def prepare_schema(conn: Conn, *, migrate: bool, fix: str) -> list[int]:
    """Bring the schema to the newest version where allowed; return the versions applied.

    An empty schema is always created. An older one is migrated only with ``migrate``,
    else refused with :class:`SchemaMismatch` carrying ``fix``; a newer one is refused.
    """
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(_LOCK)
        current, empty = await schema_version(conn)
        pending = plan(current, load_migrations("postgres"), empty=empty, migrate=migrate, fix=fix)
        if pending:
            await conn.execute(_CREATE_LEDGER)
        for migration in pending:
            await conn.execute(migration.sql.encode())  # no parameters: may hold many statements
            await conn.execute(
                _RECORD, (migration.version, migration.name, to_us(datetime.now(UTC)))
            )
            log.info("applied PostgreSQL migration %04d_%s", migration.version, migration.name)
            applied.append(migration.version)
    return applied


_RLS_PROBE = """
SELECT bool_or(pg_has_role(current_user, c.relowner, 'MEMBER')),
       bool_and(c.relrowsecurity),
       (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
FROM pg_class c
WHERE c.oid IN ('sessions'::regclass, 'branches'::regclass, 'events'::regclass,
                'idempotency'::regclass, 'state'::regclass)
"""


async def check_row_level_security(conn: Conn, *, wanted: bool) -> None:
    """Refuse a role the policies would treat otherwise than the caller asked.

    With ``wanted``, the policies must apply (not an owner, superuser or BYPASSRLS role).
    Without it, they must not: a role they apply to would find every session missing.
    """
    cur = await conn.execute(_RLS_PROBE.encode())
    row = await cur.fetchone()
    owns, enabled, bypasses = (bool(v) for v in (row or (True, False, True)))
    if not wanted:
        if enabled and not owns and not bypasses:
            raise ValidationError(
                "this role does not own chatstate's tables, so their row-level security "
                "policies apply to it: open with row_level_security=True"
            )
        return
    if bypasses:
        raise ValidationError(
            "row_level_security=True needs a role without SUPERUSER or BYPASSRLS; "
            "connect as the application role"
        )
    if owns:
        raise ValidationError(
            "row_level_security=True needs a role that does not own chatstate's tables "
            "(owners bypass the policies); migrate as the owner, connect as the app role"
        )
    if not enabled:
        raise ValidationError("row-level security is not enabled on chatstate's tables")
