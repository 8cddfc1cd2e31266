"""Deleted text leaves every SQLite file: database, WAL and shared-memory index.

``secure_delete`` zeroes deleted rows instead of leaving them in free pages, and an erase
checkpoints the WAL with TRUNCATE, so no older copy of a page survives there either.
"""

from __future__ import annotations

from pathlib import Path

from chatstate.model import NewEvent
from chatstate.store.backends.sqlite.store import SQLiteStore
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import FakeClock

MARK = "zqx-erase-me-7731-"


def _holding(folder: Path, needle: str) -> list[str]:
    data = needle.encode()
    return [p.name for p in sorted(folder.iterdir()) if p.is_file() and data in p.read_bytes()]


async def _fill(store: SQLiteStore, session_id: str, ttl: float | None = None) -> None:
    await store.create_session(
        tenant_id="t", session_id=session_id, metadata={"note": MARK + "meta"}, ttl_seconds=ttl
    )
    for i in range(50):  # enough pages that deletion frees whole pages, not only cells
        await store.append(
            tenant_id="t",
            session_id=session_id,
            events=[NewEvent.message("user", f"{MARK}message {i} " + "x" * 300)],
            idempotency_key=f"k{i}",
        )
    await store.put_state(
        tenant_id="t",
        session_id=session_id,
        data={"facts": {"secret": MARK + "fact"}},
        expected_version=0,
    )


async def test_delete_session_leaves_no_text_in_any_file(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "db.sqlite")
    try:
        await _fill(store, "doomed")
        await store.create_session(tenant_id="t", session_id="kept")
        await store.append(
            tenant_id="t", session_id="kept", events=[NewEvent.message("user", "hi")]
        )
        assert _holding(tmp_path, MARK)  # the test can see the text before the erase
        await store.delete_session(tenant_id="t", session_id="doomed")
        assert _holding(tmp_path, MARK) == []
        events = await store.read(tenant_id="t", session_id="kept")
        assert [e.content for e in events] == ["hi"]
    finally:
        await store.close()
    assert _holding(tmp_path, MARK) == []


async def test_purge_expired_leaves_no_text_in_any_file(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await SQLiteStore.open(tmp_path / "db.sqlite", config=StoreConfig(clock=clock))
    try:
        await _fill(store, "short", ttl=60)
        assert _holding(tmp_path, MARK)
        clock.advance(61)
        assert await store.purge_expired() == 1
        assert _holding(tmp_path, MARK) == []
    finally:
        await store.close()


async def test_delete_sessions_of_a_user_leaves_no_text(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "db.sqlite")
    try:
        await store.create_session(tenant_id="t", session_id="a", user_id="u1")
        await store.append(
            tenant_id="t", session_id="a", events=[NewEvent.message("user", MARK + "u1")]
        )
        assert await store.delete_sessions(tenant_id="t", user_id="u1") == 1
        assert _holding(tmp_path, MARK) == []
    finally:
        await store.close()
