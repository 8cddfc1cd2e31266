"""One erase (issue 11, item 6): :func:`chatstate.store.erase.erase` and the TTL purge
remove a session with its response logs, in an order a retry can finish, through the
library, the HTTP routes and the CLI; the erased text is in no SQLite file and on no
PostgreSQL or Redis query path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatstate.cli.main import main
from chatstate.context.engine import ContextEngine
from chatstate.errors import BackendUnavailable, NotFound
from chatstate.model import NewEvent
from chatstate.server import ServerConfig, create_app, create_key
from chatstate.server.auth import RESPONSES_TENANT as SERVER_RESPONSES_TENANT
from chatstate.server.errors import ResponseNotFound
from chatstate.server.streams import ResponseLog
from chatstate.store.backends.sqlite.store import SQLiteStore
from chatstate.store.erase import RESPONSES_TENANT, erase, purge_expired
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.store.wrapper import StoreWrapper
from chatstate.testing.backends import FakeClock
from chatstate.testing.backends_redis import require
from helpers.fake_openai import FakeOpenAI
from test_server_support import auth, live_server

MARK = "qzv-forget-me-5521-"
T = "acme"


def _logs(store: Store) -> ResponseLog:
    return ResponseLog(store, ttl_seconds=3600, lease_seconds=5)


async def _seed(
    store: Store, sid: str, *, user: str | None = None, ttl: float | None = None
) -> str:
    """A session holding MARK in a message, a state fact and a streamed answer's log."""
    await store.create_session(tenant_id=T, session_id=sid, user_id=user, ttl_seconds=ttl)
    await store.append(
        tenant_id=T, session_id=sid, events=[NewEvent.message("user", MARK + "message")]
    )
    await store.put_state(
        tenant_id=T, session_id=sid, data={"facts": {"k": MARK + "fact"}}, expected_version=0
    )
    rid = f"resp-{sid}"
    logs = _logs(store)
    await logs.create(response_id=rid, tenant=T, session_id=sid, branch="main", model="m")
    await logs.append(rid, expected=0, kind="delta", payload={"text": MARK + "answer"})
    return rid


def test_the_reserved_tenant_is_the_servers() -> None:
    assert RESPONSES_TENANT == SERVER_RESPONSES_TENANT


async def test_ttl_purge_erases_the_response_log_of_an_expired_session() -> None:
    clock = FakeClock()
    store = MemoryStore(StoreConfig(clock=clock))
    rid = await _seed(store, "short", ttl=60)
    kept = await _seed(store, "long")
    clock.advance(61)
    assert await purge_expired(store) == 1
    with pytest.raises(ResponseNotFound):  # not readable for up to response_ttl any more
        await _logs(store).load(rid)
    assert (await _logs(store).load(kept)).session_id == "long"


async def test_erase_of_a_user_reaches_expired_sessions_and_their_logs() -> None:
    clock = FakeClock()
    store = MemoryStore(StoreConfig(clock=clock))
    old = await _seed(store, "old", user="u", ttl=60)
    await _seed(store, "new", user="u")
    clock.advance(61)
    assert await erase(store, T, user_id="u") == 2
    listed = await store.list_sessions(tenant_id=T, include_expired=True)
    assert listed.items == ()
    with pytest.raises(ResponseNotFound):
        await _logs(store).load(old)


class _Flaky(StoreWrapper):
    """Fails the next delete of a session in ``tenant`` once (a crash between steps)."""

    def __init__(self, inner: Store, tenant: str) -> None:
        super().__init__(inner)
        self.tenant: str | None = tenant

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        if tenant_id == self.tenant:
            self.tenant = None
            raise BackendUnavailable("injected failure")
        await super().delete_session(tenant_id=tenant_id, session_id=session_id)


@pytest.mark.parametrize("failing", [T, RESPONSES_TENANT])
async def test_a_retried_delete_finishes_after_a_failure_at_either_step(failing: str) -> None:
    inner = MemoryStore()
    key = await create_key(inner, tenant=T, scopes="read,write")
    rid = await _seed(inner, "s")
    store = _Flaky(inner, failing)
    app = create_app(ServerConfig(dev_mode=False, key_cache_seconds=0), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = await c.delete("/v1/sessions/s", headers=auth(key))
            assert first.status_code == 503
            again = await c.delete("/v1/sessions/s", headers=auth(key))
            assert again.status_code == 204  # never 404 while anything of it is left
    with pytest.raises(ResponseNotFound):
        await _logs(inner).load(rid)
    with pytest.raises(NotFound):
        await inner.get_session(tenant_id=T, session_id="s")


async def test_delete_user_route_erases_expired_sessions_not_purged_yet() -> None:
    clock = FakeClock()
    store = MemoryStore(StoreConfig(clock=clock))
    key = await create_key(store, tenant=T, scopes="read,write")
    old = await _seed(store, "gone", user="bob", ttl=60)
    clock.advance(61)
    app = create_app(ServerConfig(dev_mode=False, key_cache_seconds=0), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.delete("/v1/users/bob", headers=auth(key))
            assert r.status_code == 200, r.text
            assert r.json() == {"deleted": 1}
    assert (await store.list_sessions(tenant_id=T, include_expired=True)).items == ()
    with pytest.raises(ResponseNotFound):
        await _logs(store).load(old)


def _holding(folder: Path, needle: str) -> list[str]:
    data = needle.encode()
    return [p.name for p in sorted(folder.iterdir()) if p.is_file() and data in p.read_bytes()]


def test_cli_sessions_delete_erases_response_logs(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"

    async def seed() -> str:
        store = await SQLiteStore.open(db)
        try:
            await _seed(store, "t1", user="ann")
            return await _seed(store, "s")
        finally:
            await store.close()

    async def check(rid: str) -> None:
        store = await SQLiteStore.open(db)
        try:
            with pytest.raises(ResponseNotFound):
                await _logs(store).load(rid)
            assert (await store.list_sessions(tenant_id=RESPONSES_TENANT)).items == ()
        finally:
            await store.close()

    rid = asyncio.run(seed())
    opts = ["--database-url", f"sqlite:///{db}", "--tenant", T]
    assert main(["sessions", "delete", "s", *opts]) == 0
    assert main(["sessions", "delete", "--user-id", "ann", "--yes", *opts]) == 0
    asyncio.run(check(rid))
    assert _holding(tmp_path, MARK) == []


async def _gateway_turns(base_url: str, key: str) -> None:
    """A message and a streamed answer holding MARK through the gateway, plus a fact."""
    headers = auth(key)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as c:
        for sid, ttl in (("erased", None), ("expiring", 60)):
            made = await c.post("/v1/sessions", json={"id": sid, "ttl_seconds": ttl})
            assert made.status_code == 201, made.text
            body = {
                "model": "m",
                "stream": True,
                "session_id": sid,
                "messages": [{"role": "user", "content": MARK + "question"}],
            }
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                text = "".join([line async for line in r.aiter_lines()])
            assert "forget-me" in text
            fact = {"key": "code", "value": MARK + "fact"}
            assert (await c.post(f"/v1/sessions/{sid}/state/facts", json=fact)).status_code < 300


async def test_no_sqlite_file_holds_erased_text_after_erase_and_ttl_purge(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = await SQLiteStore.open(tmp_path / "db.sqlite", config=StoreConfig(clock=clock))
    key = await create_key(store, tenant=T, scopes="read,write")
    try:
        with FakeOpenAI(f"Your answer: {MARK}answer and more words", chunk_words=2) as fake:
            config = ServerConfig(dev_mode=False, upstream_base_url=fake.base_url)
            async with live_server(create_app(config, store=store)) as live:
                await _gateway_turns(live.base_url, key)
                assert _holding(tmp_path, MARK)  # the test can see the text first
                headers = auth(key)
                async with httpx.AsyncClient(base_url=live.base_url, headers=headers) as c:
                    assert (await c.delete("/v1/sessions/erased")).status_code == 204
                clock.advance(61)
                assert await purge_expired(store) == 1  # what the server's purge loop calls
                assert _holding(tmp_path, MARK) == []
    finally:
        await store.close()
    assert _holding(tmp_path, MARK) == []


async def _erase_everything(store: Store) -> None:
    rid = await _seed(store, "s", user="u")
    assert await erase(store, T, session_id="s") == 1
    with pytest.raises(NotFound):
        await store.read(tenant_id=T, session_id="s")
    with pytest.raises(NotFound):
        await store.read(tenant_id=RESPONSES_TENANT, session_id=rid)
    await _seed(store, "x", user="u")
    assert await erase(store, T, user_id="u") == 1
    assert (await store.list_sessions(tenant_id=RESPONSES_TENANT, include_expired=True)).items == ()


async def test_redis_keeps_no_erased_text_on_any_key(tmp_path: Path) -> None:
    spec = require("redis")
    async with spec.open(StoreConfig(), tmp_path) as opened:
        store: Any = opened
        await _erase_everything(store)
        found: list[str] = []
        async for key in store.client.scan_iter(match=f"{store.prefix}:*"):
            kind = await store.client.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "string":
                values: Any = [await store.client.get(key)]
            elif kind == "hash":
                values = list((await store.client.hgetall(key)).items())
            elif kind == "zset":
                values = await store.client.zrange(key, 0, -1)
            elif kind == "list":
                values = await store.client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(await store.client.smembers(key))
            else:  # a stream
                values = await store.client.xrange(key)
            if MARK in repr(values) or MARK in str(key):
                found.append(str(key))
        assert found == []


async def test_postgres_keeps_no_erased_text_in_any_table() -> None:
    require("postgres")
    import psycopg
    from psycopg import sql

    from chatstate.store.postgres import PostgresStore
    from chatstate.testing.backends_postgres import (
        create_schema,
        drop_schema,
        server_url,
    )

    schema = await create_schema()
    try:
        store = await PostgresStore.open(server_url(), schema=schema)
        try:
            await _erase_everything(store)
        finally:
            await store.close()
        async with await psycopg.AsyncConnection.connect(server_url(), autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
            tables = [row[0] for row in await cur.fetchall()]
            assert tables
            holding = []
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(
                    sql.Identifier(schema, table)
                )
                cur = await conn.execute(query, (f"%{MARK}%",))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    holding.append(table)
            assert holding == []
    finally:
        await drop_schema(schema)


async def test_every_worker_drops_cached_text_of_an_erased_session(tmp_path: Path) -> None:
    """Two workers (engines) over one database: the session is erased through the other
    one, then created again with the same id; this worker's next build uses nothing it
    cached about the erased one (here its system prompt, read once per process)."""
    store = await SQLiteStore.open(tmp_path / "db.sqlite")
    try:
        here, there = ContextEngine(store, tail_limit=10), ContextEngine(store, tail_limit=10)
        old = [NewEvent.message("system", MARK + "system")]
        old += [NewEvent.message("user", f"{MARK}question {i}") for i in range(12)]
        await store.create_session(tenant_id=T, session_id="s")
        await store.append(tenant_id=T, session_id="s", events=old)
        built = await here.build("s", "hello", tenant_id=T)
        assert any(MARK in str(m.get("content")) for m in built.messages)
        await erase(store, T, session_id="s")
        await there.forget(T, "s")  # only the worker that served the erase is told
        await store.create_session(tenant_id=T, session_id="s")
        new = [NewEvent.message("system", "be brief")]
        new += [NewEvent.message("user", f"other {i}") for i in range(14)]
        await store.append(tenant_id=T, session_id="s", events=new)
        again = await here.build("s", "hello", tenant_id=T)
        assert not any(MARK in str(m.get("content")) for m in again.messages)
        assert MARK not in repr(vars(here))
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "redis"])
async def test_list_sessions_include_expired_on_every_backend(backend: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with require(backend).open(StoreConfig(clock=clock), tmp_path) as store:
        await store.create_session(tenant_id=T, session_id="old", user_id="u", ttl_seconds=60)
        await store.create_session(tenant_id=T, session_id="new", user_id="u")
        clock.advance(61)
        assert [s.id for s in (await store.list_sessions(tenant_id=T)).items] == ["new"]
        every = await store.list_sessions(tenant_id=T, user_id="u", include_expired=True)
        assert sorted(s.id for s in every.items) == ["new", "old"]
        assert await erase(store, T, user_id="u") == 2
        assert (await store.list_sessions(tenant_id=T, include_expired=True)).items == ()
