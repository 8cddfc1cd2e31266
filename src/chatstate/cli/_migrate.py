"""``chatstate migrate``: bring the database at ``--database-url`` to the newest schema.

How each backend migrates is data, not code paths spread over the CLI:

* PostgreSQL has a ``migrate(url, schema=...)`` function of its own: it takes an advisory
  lock, so several processes (or deploy jobs) may run it at once, and it can target a
  PostgreSQL schema (``--schema``).
* SQLite migrates when opened with ``?migrate=1`` in its URL.
* Other stores (memory, Redis) keep no schema; migrate only checks that they open.

Before and after versions are reported where the store exposes ``schema_version()``.
"""

from __future__ import annotations

import argparse
import re
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode

from chatstate.cli._commands import Context, opened, print_json
from chatstate.cli._errors import UsageError
from chatstate.errors import SchemaMismatch, ValidationError
from chatstate.store.protocol import Store
from chatstate.store.url import redact

__all__ = ["migrate", "with_migrate_flag"]

Versions = tuple[int | None, int | None]
"""Schema version before and after; ``None`` where the store has no version to tell."""

_POSTGRES = frozenset({"postgresql", "postgres"})
_URL_FLAG = frozenset({"sqlite"})
_BEHIND = re.compile(r"schema is version (\d+)")


@runtime_checkable
class _Versioned(Protocol):
    async def schema_version(self) -> int: ...


async def _version(store: Store) -> int | None:
    return await store.schema_version() if isinstance(store, _Versioned) else None


def with_migrate_flag(url: str) -> str:
    """``url`` with ``migrate=1`` in its query: how a store opener is asked to migrate."""
    base, _, query = url.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "migrate"]
    return f"{base}?{urlencode([*pairs, ('migrate', '1')])}"


async def _by_url_flag(ctx: Context) -> Versions:
    """Open once as is (to read the version, or learn that it is behind), then migrate."""
    before: int | None
    try:
        async with opened(ctx) as store:
            before = await _version(store)
    except SchemaMismatch as exc:
        if "newer" in exc.message:
            raise
        found = _BEHIND.search(exc.message)
        before = int(found[1]) if found else None
    async with opened(ctx, with_migrate_flag(ctx.database_url)) as store:
        return before, await _version(store)


async def _postgres(ctx: Context, schema: str | None) -> Versions:
    try:
        from chatstate.store import postgres  # noqa: PLC0415 - the driver is optional
    except ModuleNotFoundError as exc:
        raise ValidationError(
            "PostgreSQL needs its driver: pip install 'chatstate[postgres]' "
            f"(missing module {exc.name!r})"
        ) from exc
    applied = await postgres.migrate(ctx.database_url, schema=schema)
    store = await postgres.PostgresStore.open(ctx.database_url, config=ctx.config, schema=schema)
    try:
        after = await store.schema_version()
    finally:
        await store.close()
    return (min(applied) - 1 if applied else after), after


async def _open_only(ctx: Context) -> Versions:
    async with opened(ctx) as store:
        version = await _version(store)
    return version, version


async def migrate(ctx: Context, args: argparse.Namespace) -> int:
    """``chatstate migrate [--schema S]``."""
    scheme = ctx.database_url.split("://", 1)[0].lower()
    schema = args.schema
    if schema is not None and scheme not in _POSTGRES:
        raise UsageError("--schema applies to PostgreSQL URLs only")
    if scheme in _POSTGRES:
        before, after = await _postgres(ctx, schema)
    elif scheme in _URL_FLAG:
        before, after = await _by_url_flag(ctx)
    else:
        before, after = await _open_only(ctx)
    shown = redact(ctx.database_url) + (f" (schema {schema})" if schema else "")
    if ctx.as_json:
        print_json(
            ctx, {"database": shown, "before": before, "after": after, "changed": before != after}
        )
    elif after is None:
        ctx.out.write(f"{shown}: this store keeps no schema; nothing to migrate\n")
    elif before == after:
        ctx.out.write(f"{shown}: schema version {after}, up to date\n")
    else:
        shown_before = "?" if before is None else before
        ctx.out.write(f"{shown}: schema version {shown_before} -> {after}\n")
    return 0
