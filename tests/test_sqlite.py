"""SQLite-specific behaviour: schema checks, pragmas, URLs, several stores on one file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from chatstate.errors import SchemaMismatch, ValidationError
from chatstate.model import NewEvent
from chatstate.store.backends.sqlite import core as sqlite_core
from chatstate.store.migrations import Migration, load_migrations, plan
from chatstate.store.sqlite import SQLiteStore
from chatstate.store.url import open_store


async def test_new_file_is_created_at_newest_schema(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "new.db")
    try:
        assert await store.schema_version() == load_migrations("sqlite")[-1].version
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_older_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await (await SQLiteStore.open(path)).close()
    with sqlite3.connect(path) as conn:  # pretend the last migration never ran
        conn.execute("DELETE FROM schema_migrations")
    with pytest.raises(SchemaMismatch) as caught:
        await SQLiteStore.open(path)
    assert "chatstate migrate --database-url sqlite:///" in str(caught.value)
    assert caught.value.status == 500


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await (await SQLiteStore.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    for migrate in (False, True):
        with pytest.raises(SchemaMismatch, match="upgrade chatstate"):
            await SQLiteStore.open(path, migrate=migrate)


async def test_migration_2_keeps_state_rows_as_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 file (one state row per session) migrates to state per branch: the row
    becomes main's document, version kept; a new fork has none."""
    path = tmp_path / "v1.db"
    first = load_migrations("sqlite")[:1]
    monkeypatch.setattr(sqlite_core, "load_migrations", lambda _dialect: first)
    await (await SQLiteStore.open(path)).close()
    monkeypatch.undo()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO sessions (sid, tenant_id, session_id, metadata, created_us, updated_us) "
            "VALUES (7, 'acme', 's', '{}', 1, 1)"
        )
        conn.execute(
            "INSERT INTO branches (sid, name, head_seq, created_us) VALUES (7, 'main', 0, 1)"
        )
        conn.execute('INSERT INTO state VALUES (7, 3, \'{"plan":"gold"}\', 1)')
    conn.close()
    with pytest.raises(SchemaMismatch):
        await SQLiteStore.open(path)
    store = await SQLiteStore.open(path, migrate=True)
    try:
        assert await store.schema_version() == 2
        doc = await store.get_state(tenant_id="acme", session_id="s")
        assert (doc.version, dict(doc.data)) == (3, {"plan": "gold"})
        await store.fork(tenant_id="acme", session_id="s", new_branch="alt")
        assert (await store.get_state(tenant_id="acme", session_id="s", branch="alt")).version == 0
        again = await store.put_state(
            tenant_id="acme", session_id="s", data={"plan": "silver"}, expected_version=3
        )
        assert again.version == 4
    finally:
        await store.close()


def test_plan_is_a_pure_rule() -> None:
    ms = [Migration(1, "a", ""), Migration(2, "b", ""), Migration(3, "c", "")]
    assert plan(0, ms, empty=True, migrate=False, fix="x") == ms
    assert plan(1, ms, empty=False, migrate=True, fix="x") == ms[1:]
    assert plan(3, ms, empty=False, migrate=False, fix="x") == []
    with pytest.raises(SchemaMismatch, match="fix: run this"):
        plan(1, ms, empty=False, migrate=False, fix="run this")


async def test_two_stores_on_one_file_stay_ordered(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first = await SQLiteStore.open(path)
    second = await SQLiteStore.open(path)
    try:
        await first.create_session(tenant_id="t", session_id="s")
        await asyncio.gather(
            *(
                store.append(
                    tenant_id="t", session_id="s", events=[NewEvent.message("user", f"{n}")]
                )
                for n in range(100)
                for store in (first, second)
            )
        )
        events = await second.read(tenant_id="t", session_id="s", limit=1000)
        assert [e.seq for e in events] == list(range(1, 201))
    finally:
        await first.close()
        await second.close()


async def test_synchronous_setting_and_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/x.db?synchronous=full"
    store = await open_store(url)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == f"{tmp_path}/deep/er/x.db"
        level = await store._call(lambda: store._db.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
    finally:
        await store.close()
    with pytest.raises(ValidationError):
        await open_store(f"sqlite:///{tmp_path}/y.db?synchronous=sometimes")
    with pytest.raises(ValidationError, match="unsupported database URL"):
        await open_store("mysql://root:hunter2@localhost/db")
    with pytest.raises(ValidationError) as caught:
        await open_store("oracle://scott:tiger@host/db")
    assert "tiger" not in str(caught.value)
