"""Conformance registration of the PostgreSQL backend: a fresh schema per test.

The server is ``CHATSTATE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Each store gets its own schema, named
``cs_test_<pid>_<random>``, created empty, migrated, and dropped when the test ends; schemas
left behind by a killed test process are dropped the next time the suite runs. psycopg is
imported only when the backend is used, so this module loads without the extra.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path

from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.registry import BackendSpec, register, share

__all__ = ["create_schema", "drop_schema", "server_url"]

_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_PREFIX = "cs_test_"


def server_url() -> str:
    """The PostgreSQL server tests use."""
    return os.environ.get("CHATSTATE_TEST_POSTGRES_URL", _DEFAULT_URL)


@cache
def _unavailable() -> str | None:
    try:
        import psycopg  # noqa: PLC0415 - optional driver
    except ModuleNotFoundError:
        return "psycopg is not installed (pip install 'chatstate[postgres]')"
    from chatstate.store.backends.postgres.pool import display_url  # noqa: PLC0415 - needs psycopg

    try:
        with psycopg.connect(server_url(), connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
            _drop_orphans(conn)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {display_url(server_url())} is unreachable: {first}"
    return None


def _drop_orphans(conn: object) -> None:
    """Drop test schemas whose creating process is gone (a killed earlier run)."""
    from psycopg import Connection, sql  # noqa: PLC0415 - optional driver

    assert isinstance(conn, Connection)
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (_PREFIX + "%",)
    ).fetchall()
    for (name,) in rows:
        pid = name[len(_PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


async def create_schema() -> str:
    """Create an empty, uniquely named schema on the test server and return its name."""
    import psycopg  # noqa: PLC0415 - optional driver
    from psycopg import sql  # noqa: PLC0415

    name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(server_url(), autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


async def drop_schema(name: str) -> None:
    import psycopg  # noqa: PLC0415 - optional driver
    from psycopg import sql  # noqa: PLC0415

    async with await psycopg.AsyncConnection.connect(server_url(), autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@asynccontextmanager
async def _open_schema(schema: str, config: StoreConfig) -> AsyncIterator[Store]:
    from chatstate.store.backends.postgres.store import PostgresStore  # noqa: PLC0415

    store = await PostgresStore.open(
        server_url(), config=config, schema=schema, min_size=1, max_size=4
    )
    url = server_url()
    url += f"{'&' if '?' in url else '?'}schema={schema}"
    try:
        yield share(store, lambda: _open_schema(schema, config), url=url)
    finally:
        await store.close()


@asynccontextmanager
async def _open(config: StoreConfig, _tmp: Path) -> AsyncIterator[Store]:
    schema = await create_schema()
    try:
        async with _open_schema(schema, config) as store:
            yield store
    finally:
        await drop_schema(schema)


register(BackendSpec(name="postgres", open=_open, unavailable=_unavailable))
