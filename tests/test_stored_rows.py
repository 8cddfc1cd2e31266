"""RELIABILITY case 22: nothing stored can brick a session.

Rows are rewritten straight in the database (SQLite file, PostgreSQL table) behind the
store's back: content stored as an object or a number, another schema version, a missing
role, an unknown kind, an unknown role, a body that is not JSON. Every route keeps
answering: context leaves each one out with its reason, export writes it as stored under a
marker, health skips it and says so, and the gateway sends nothing unknown upstream.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatstate.server import ServerConfig
from chatstate.store.codec import decode_event
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends import REGISTRY, in_ci
from helpers.fake_openai import FakeOpenAI
from test_server_support import api

Tamper = Callable[[str, str], Awaitable[None]]

# marker in the stored content -> (the body written instead, the reason readers give)
BROKEN: dict[str, tuple[str, str]] = {
    "M-object": (
        '{"v":1,"kind":"message","role":"user","content":{"text":"M-object"}}',
        "unreadable",
    ),
    "M-number": ('{"v":1,"kind":"message","role":"assistant","content":42}', "unreadable"),
    "M-version": ('{"v":99,"kind":"message","role":"user","content":"M-version"}', "unreadable"),
    "M-norole": ('{"v":1,"kind":"message","content":"M-norole"}', "unknown role"),
    "M-kind": ('{"v":1,"kind":"hologram","role":"user","content":"M-kind"}', "unknown kind"),
    "M-wizard": ('{"v":1,"kind":"message","role":"wizard","content":"M-wizard"}', "unknown role"),
    "M-notjson": ('{"v":1,"kind":"mess', "unreadable"),
}


@asynccontextmanager
async def _sqlite(tmp: Path) -> AsyncIterator[tuple[Store, Tamper]]:
    async with REGISTRY["sqlite"].open(StoreConfig(), tmp) as store:

        async def tamper(marker: str, body: str) -> None:
            with sqlite3.connect(tmp / "chatstate.db") as db:
                cur = db.execute(
                    "UPDATE events SET body = ? WHERE body LIKE ?", (body, f"%{marker}%")
                )
                assert cur.rowcount == 1

        yield store, tamper


@asynccontextmanager
async def _postgres(tmp: Path) -> AsyncIterator[tuple[Store, Tamper]]:
    import psycopg
    from psycopg import sql

    from chatstate.testing.backends_postgres import server_url

    spec = REGISTRY["postgres"]
    reason = spec.unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    async with spec.open(StoreConfig(), tmp) as store:

        async def tamper(marker: str, body: str) -> None:
            async with await psycopg.AsyncConnection.connect(server_url()) as conn:
                found = await conn.execute(
                    "SELECT table_schema FROM information_schema.tables "
                    "WHERE table_name = 'events' AND table_schema LIKE 'cs_test_%'"
                )
                changed = 0
                for (schema,) in await found.fetchall():
                    query = sql.SQL("UPDATE {}.events SET body = %s WHERE body LIKE %s").format(
                        sql.Identifier(schema)
                    )
                    cur = await conn.execute(query, (body, f"%{marker}%"))
                    changed += cur.rowcount
                await conn.commit()
                assert changed == 1

        yield store, tamper


OPENERS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.mark.parametrize("db", sorted(OPENERS))
async def test_rows_written_behind_the_stores_back_never_brick_a_session(
    db: str, tmp_path: Path
) -> None:
    async with OPENERS[db](tmp_path) as (store, tamper):
        with FakeOpenAI("still here", chunk_words=1) as fake:
            config = ServerConfig(
                dev_mode=True, key_cache_seconds=0, upstream_base_url=fake.base_url
            )
            async with api(config, store) as a:
                c = a.client
                sid = f"brick-{db}"
                assert (await c.post("/v1/sessions", json={"id": sid})).status_code == 201
                roles = ["user", "assistant"]
                events = [
                    {"role": roles[i % 2], "content": f"{m} text"} for i, m in enumerate(BROKEN)
                ]
                events.append({"role": "user", "content": "a readable question"})
                url = f"/v1/sessions/{sid}/events"
                assert (await c.post(url, json={"events": events})).status_code == 201
                for marker, (body, _) in BROKEN.items():
                    await tamper(marker, body)
                want = {i + 1: reason for i, (_, reason) in enumerate(BROKEN.values())}

                listed = await c.get(url)
                assert listed.status_code == 200
                got = {e["seq"]: e.get("unreadable") for e in listed.json()["data"]}
                assert {s: r for s, r in got.items() if r} == want

                built = await c.post(f"/v1/sessions/{sid}/context", json={})
                assert built.status_code == 200
                excluded = {seq: why for seq, why in built.json()["manifest"]["excluded"]}
                assert excluded == want
                sent = json.dumps(built.json()["messages"])
                assert "wizard" not in sent and "M-" not in sent

                export = await c.get(f"/v1/sessions/{sid}/export")
                assert export.status_code == 200
                lines = [json.loads(x) for x in export.text.splitlines()]
                marked = [x["chatstate_unreadable"] for x in lines if "chatstate_unreadable" in x]
                assert {m["seq"]: m["reason"] for m in marked} == want
                assert [m["raw"] for m in marked] == [b for b, _ in BROKEN.values()]
                assert lines[-1] == {"role": "user", "content": "a readable question"}

                health = await c.get(f"/v1/sessions/{sid}/health")
                assert health.status_code == 200
                skipped = {s["seq"]: s["reason"] for s in health.json()["skipped"]}
                assert skipped == want

                chat = await c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "m",
                        "session_id": sid,
                        "messages": [{"role": "user", "content": "and now?"}],
                    },
                )
                assert chat.status_code == 200, chat.text
                upstream = fake.requests[-1].body["messages"]
                assert isinstance(upstream, list)
                assert {m["role"] for m in upstream} <= {"system", "user", "assistant"}
                assert "M-" not in json.dumps(upstream)
                for path in ("", "/branches", "/state"):
                    assert (await c.get(f"/v1/sessions/{sid}{path}")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        "[1, 2]",
        '{"v": 1, "kind": "tool_call", "role": "assistant", "tool_calls": [{"id": 3}]}',
        '{"v": 1, "kind": "message", "role": "user", "content": "x", "data": [1]}',
        '{"v": 1, "kind": "message", "role": "user", "content": [1, 2]}',
        '{"v": 1, "kind": "tool_result", "role": "tool", "content": "x"}',
    ],
)
def test_decode_event_never_raises_for_a_stored_body(body: str | bytes) -> None:
    event = decode_event(
        body,
        seq=7,
        branch="main",
        created_at=datetime.now(UTC),
        token_count=None,
        idempotency_key=None,
    )
    assert event.unreadable in ("unreadable", "unknown role")
    assert event.kind == "marker" and event.seq == 7
    raw = event.data["raw"]
    assert isinstance(raw, str) and raw
