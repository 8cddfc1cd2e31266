"""PostgreSQL-specific behaviour: schema versions, connection loss, cancellation, RLS."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from chatstate.errors import (
    BackendUnavailable,
    SchemaMismatch,
    SeqConflict,
    SessionNotFound,
    ValidationError,
)
from chatstate.model import NewEvent
from chatstate.store.migrations import Migration, load_migrations
from chatstate.testing.backends import REGISTRY, in_ci

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 - after the importorskip above

from chatstate.store.backends.postgres import schema as _pg_schema  # noqa: E402
from chatstate.store.postgres import PostgresStore, migrate  # noqa: E402
from chatstate.store.url import open_store  # noqa: E402
from chatstate.testing.backends_postgres import (  # noqa: E402
    create_schema,
    drop_schema,
    server_url,
)

pytestmark = pytest.mark.postgres
LATEST = load_migrations("postgres")[-1].version
APP_ROLE = "chatstate_test_app"


@pytest.fixture(scope="module", autouse=True)
def _server() -> None:
    reason = REGISTRY["postgres"].unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(reason)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = await create_schema()
    try:
        yield name
    finally:
        await drop_schema(name)


async def admin(query: str | sql.Composed, params: tuple[object, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
    async with await psycopg.AsyncConnection.connect(server_url(), autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


def msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


# -- schema versions --------------------------------------------------------------------


async def test_empty_schema_is_created_and_older_one_refused(schema: str) -> None:
    store = await PostgresStore.open(server_url(), schema=schema)
    assert await store.schema_version() == LATEST
    await store.close()
    assert await migrate(server_url(), schema=schema) == []  # nothing left to do
    # Pretend the migrations never ran on a database that has chatstate's tables.
    await admin(sql.SQL("DELETE FROM {}.schema_migrations").format(sql.Identifier(schema)))
    secret_url = server_url().replace("postgres@", "postgres:hunter2@", 1)
    with pytest.raises(SchemaMismatch) as caught:
        await PostgresStore.open(secret_url, schema=schema)
    assert "chatstate migrate --database-url postgresql://postgres:***@" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_newer_code_migrates_only_when_asked(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await PostgresStore.open(server_url(), schema=schema)).close()
    extra = Migration(LATEST + 1, "probe", "CREATE TABLE probe (x integer)")
    monkeypatch.setattr(
        _pg_schema, "load_migrations", lambda dialect: [*load_migrations(dialect), extra]
    )
    with pytest.raises(SchemaMismatch, match="chatstate migrate"):
        await PostgresStore.open(server_url(), schema=schema)
    store = await PostgresStore.open(server_url(), schema=schema, migrate=True)
    assert await store.schema_version() == LATEST + 1
    await store.close()
    monkeypatch.undo()  # the code is now older than the database
    for flag in (False, True):
        with pytest.raises(SchemaMismatch, match="upgrade chatstate"):
            await PostgresStore.open(server_url(), schema=schema, migrate=flag)


async def test_migration_2_keeps_state_rows_as_main(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 schema (one state row per session) migrates to state per branch: the
    row becomes main's document, version kept; a new fork has none."""
    first = load_migrations("postgres")[:1]
    monkeypatch.setattr(_pg_schema, "load_migrations", lambda _dialect: first)
    await (await PostgresStore.open(server_url(), schema=schema)).close()
    monkeypatch.undo()
    ident = sql.Identifier(schema)
    await admin(
        sql.SQL(
            "INSERT INTO {}.sessions (tenant_id, session_id, metadata, created_us, updated_us) "
            "VALUES ('acme', 's', '{{}}', 1, 1)"
        ).format(ident)
    )
    await admin(
        sql.SQL(
            "INSERT INTO {}.branches (tenant_id, session_id, name, ord, head_seq, created_us) "
            "VALUES ('acme', 's', 'main', 0, 0, 1)"
        ).format(ident)
    )
    await admin(
        sql.SQL("INSERT INTO {}.state VALUES ('acme', 's', 3, %s, 1)").format(ident),
        ('{"plan":"gold"}',),
    )
    with pytest.raises(SchemaMismatch):
        await PostgresStore.open(server_url(), schema=schema)
    store = await PostgresStore.open(server_url(), schema=schema, migrate=True)
    try:
        assert await store.schema_version() == LATEST
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


async def test_concurrent_migrations_take_turns(schema: str) -> None:
    results = await asyncio.gather(*(migrate(server_url(), schema=schema) for _ in range(6)))
    assert sorted(results) == [[]] * 5 + [list(range(1, LATEST + 1))]
    rows = await admin(
        sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY 1").format(
            sql.Identifier(schema)
        )
    )
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))


async def test_open_store_by_url(schema: str) -> None:
    url = f"{server_url()}?application_name=cs%20test&schema={schema}&pool_max_size=2&migrate=1"
    store = await open_store(url)
    try:
        assert store.capabilities.durable and store.capabilities.shared
        await store.create_session(tenant_id="t", session_id="s")
        await store.append(tenant_id="t", session_id="s", events=[msg("via url")])
    finally:
        await store.close()
    rows = await admin(sql.SQL("SELECT body FROM {}.events").format(sql.Identifier(schema)))
    assert rows == [('{"v":1,"kind":"message","role":"user","content":"via url"}',)]
    with pytest.raises(ValidationError):
        await open_store(f"{server_url()}?migrate=maybe")


async def test_two_pools_race_on_one_session(schema: str) -> None:
    first = await PostgresStore.open(server_url(), schema=schema)
    second = await PostgresStore.open(server_url(), schema=schema)
    try:
        await first.create_session(tenant_id="t", session_id="s")
        for head in range(200):
            outcomes = await asyncio.gather(
                *(
                    store.append(
                        tenant_id="t", session_id="s", events=[msg(f"{head}")], expected_seq=head
                    )
                    for store in (first, second)
                ),
                return_exceptions=True,
            )
            assert sum(isinstance(o, SeqConflict) for o in outcomes) == 1, outcomes
        events = await second.read(tenant_id="t", session_id="s", limit=1000)
        assert [e.content for e in events] == [str(i) for i in range(200)]
    finally:
        await first.close()
        await second.close()


# -- connection loss --------------------------------------------------------------------


class Proxy:
    """A TCP proxy on loopback that can delay traffic, drop every connection, or go away."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.target = port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.lose_commit_reply = False
        """Pass the next COMMIT to the server, then drop the line before its reply."""
        self._swallow = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                if self.delay:
                    await asyncio.sleep(random.uniform(0, self.delay))
                if self._swallow:
                    continue
                committing = self.lose_commit_reply and b"COMMIT" in chunk
                self._swallow = committing  # from now on, nothing reaches the client
                dst.write(chunk)
                await dst.drain()
                if committing:
                    self.lose_commit_reply = False
                    await asyncio.sleep(0.3)  # the server commits; its answer is lost
                    self.cut()
                    self._swallow = False
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        """Drop every open connection, as a crashed server or a broken network would."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()
        for task in list(self._tasks):
            task.cancel()


def _port() -> int:
    return int(psycopg.conninfo.conninfo_to_dict(server_url()).get("port") or 5432)


def _via(proxy: Proxy) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(server_url())
    parts.update(host="127.0.0.1", port=str(proxy.port))
    return psycopg.conninfo.make_conninfo(**parts)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    relay = Proxy(_port())
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def test_lost_connections_are_retried_transparently(schema: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(_via(proxy), schema=schema, max_size=3)
    try:
        await store.create_session(tenant_id="t", session_id="s")
        for i in range(5):
            proxy.cut()  # every pooled connection dies between two calls
            await store.append(
                tenant_id="t", session_id="s", events=[msg(f"m{i}")], idempotency_key=f"k{i}"
            )
        events = await store.read(tenant_id="t", session_id="s")
        assert [e.content for e in events] == [f"m{i}" for i in range(5)]
    finally:
        await store.close()


async def test_commit_with_a_lost_reply_is_never_applied_twice(schema: str, proxy: Proxy) -> None:
    """The server commits but the reply never arrives: an append with an idempotency key
    is retried and replays; one without a key reports the unknown outcome, unretried."""
    store = await PostgresStore.open(_via(proxy), schema=schema, max_size=1)
    try:
        await store.create_session(tenant_id="t", session_id="s")
        proxy.lose_commit_reply = True
        keyed = await store.append(
            tenant_id="t", session_id="s", events=[msg("keyed")], idempotency_key="turn-1"
        )
        assert keyed.replayed and keyed.first_seq == 1
        assert [e.content for e in keyed.events] == ["keyed"]
        proxy.lose_commit_reply = True
        with pytest.raises(BackendUnavailable, match="may or may not have been applied"):
            await store.append(tenant_id="t", session_id="s", events=[msg("plain")])
        events = await store.read(tenant_id="t", session_id="s")
        assert [e.content for e in events] == ["keyed", "plain"]  # each exactly once
    finally:
        await store.close()


async def test_unreachable_server_is_backend_unavailable_then_recovers(
    schema: str, proxy: Proxy
) -> None:
    url = _via(proxy).replace("user=postgres", "user=postgres password=hunter2")
    store = await PostgresStore.open(url, schema=schema, retry_for=1.5, max_size=2)
    try:
        await store.create_session(tenant_id="t", session_id="s")
        await proxy.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            await store.read(tenant_id="t", session_id="s")
        assert time.monotonic() - started < 6, "gave up late"
        assert caught.value.status == 503
        assert "hunter2" not in str(caught.value)
        await proxy.start()  # the same port comes back
        deadline = time.monotonic() + 20
        while True:
            try:
                await store.append(tenant_id="t", session_id="s", events=[msg("back")])
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "the store did not reconnect by itself"
        assert [e.content for e in await store.read(tenant_id="t", session_id="s")] == ["back"]
    finally:
        await store.close()


async def test_refused_server_fails_fast_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await PostgresStore.open(
            "postgresql://someone:hunter2@127.0.0.1:1/db", retry_for=1.0, connect_timeout=2
        )
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


# -- cancellation -----------------------------------------------------------------------


async def test_cancelled_calls_never_leak_results(schema: str) -> None:
    """Reads for two tenants through a delaying proxy, many cancelled mid-flight: every
    completed read carries its own tenant's data, and the pool stays clean."""
    relay = Proxy(_port(), delay=0.002)
    await relay.start()
    store = await PostgresStore.open(_via(relay), schema=schema, max_size=4)
    rng = random.Random(3)
    try:
        for tenant in ("alpha", "beta"):
            await store.create_session(tenant_id=tenant, session_id="same")
            await store.append(
                tenant_id=tenant,
                session_id="same",
                events=[msg(f"{tenant}-{i}") for i in range(30)],
            )
            await store.put_state(
                tenant_id=tenant, session_id="same", data={"owner": tenant}, expected_version=0
            )

        async def call(tenant: str, kind: int) -> tuple[str, list[str]]:
            if kind == 0:
                events = await store.read_last(tenant_id=tenant, session_id="same", n=10)
                return tenant, [str(e.content).split("-")[0] for e in events]
            if kind == 1:
                state = await store.get_state(tenant_id=tenant, session_id="same")
                return tenant, [str(state.data["owner"])]
            page = await store.list_sessions(tenant_id=tenant)
            return tenant, [str(s.tenant_id) for s in page.items]

        store._runner.pool.pop_stats()  # white-box: the pool's own counters
        completed = cancelled = 0
        for _ in range(70):  # 2,100 calls
            tasks = [
                asyncio.create_task(call(rng.choice(("alpha", "beta")), rng.randrange(3)))
                for _ in range(30)
            ]
            await asyncio.sleep(rng.uniform(0, 0.01))
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, asyncio.CancelledError):
                    cancelled += 1
                    continue
                assert not isinstance(outcome, BaseException), outcome
                tenant, owners = outcome
                assert owners and set(owners) == {tenant}, (tenant, owners)
                completed += 1
        assert completed > 500 and cancelled > 500
        stats = store._runner.pool.pop_stats()
        served = stats["requests_num"] - stats.get("requests_errors", 0)
        assert served - completed > 20, "too few calls were cancelled while holding a connection"
        for tenant in ("alpha", "beta") * 10:  # every pooled connection is still in sync
            events = await store.read(tenant_id=tenant, session_id="same", limit=100)
            assert [e.content for e in events] == [f"{tenant}-{i}" for i in range(30)]
        busy = await admin(
            "SELECT state FROM pg_stat_activity WHERE application_name = 'chatstate' "
            "AND state LIKE 'idle in transaction%%' AND query_start < now() - interval '1 second'"
        )
        assert busy == []
    finally:
        await store.close()
        await relay.stop()


# -- row-level security -----------------------------------------------------------------


async def _grant_app_role(schema: str) -> None:
    try:
        await admin(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
    except psycopg.errors.DuplicateObject:
        pass
    except psycopg.errors.UniqueViolation:  # another test run created it at the same moment
        pass
    ident = sql.Identifier(schema)
    role = sql.Identifier(APP_ROLE)
    for stmt in (
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
    ):
        await admin(sql.SQL(stmt).format(s=ident, r=role))


def _as_app() -> str:
    parts = psycopg.conninfo.conninfo_to_dict(server_url())
    parts["user"] = APP_ROLE
    return psycopg.conninfo.make_conninfo(**parts)


async def test_row_level_security_keeps_tenants_apart_on_one_connection(schema: str) -> None:
    await (await PostgresStore.open(server_url(), schema=schema)).close()  # owner migrates
    await _grant_app_role(schema)
    with pytest.raises(ValidationError, match=r"does not own|SUPERUSER"):
        await PostgresStore.open(server_url(), schema=schema, row_level_security=True)
    with pytest.raises(ValidationError, match="open with row_level_security=True"):
        await PostgresStore.open(_as_app(), schema=schema)  # would see no sessions at all
    store = await PostgresStore.open(
        _as_app(), schema=schema, row_level_security=True, min_size=1, max_size=1
    )
    try:
        await store.create_session(tenant_id="alpha", session_id="s", ttl_seconds=3600)
        await store.append(tenant_id="alpha", session_id="s", events=[msg("alpha secret")])
        await store.put_state(tenant_id="alpha", session_id="s", data={"k": 1}, expected_version=0)
        # Tenant beta on the very same pooled connection sees nothing of alpha.
        assert (await store.list_sessions(tenant_id="beta")).items == ()
        with pytest.raises(SessionNotFound):
            await store.read(tenant_id="beta", session_id="s")
        assert await store.delete_sessions(tenant_id="beta") == 0
        await store.create_session(tenant_id="beta", session_id="s")
        assert await store.read(tenant_id="beta", session_id="s") == []
        # A query outside chatstate's transactions, on that connection, sees no rows at all.
        async with store._runner.pool.connection() as conn:  # white-box: a raw pooled one
            for table in _pg_schema.TABLES:
                cur = await conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                )
                assert await cur.fetchone() == (0,), table
            cur = await conn.execute("SELECT current_setting('chatstate.tenant_id', true)")
            assert (await cur.fetchone())[0] in (None, "")
        assert await store.purge_expired() == 0  # runs with the owner's rights
        got = await store.read(tenant_id="alpha", session_id="s")
        assert [e.content for e in got] == ["alpha secret"]
    finally:
        await store.close()
    owner_view = await admin(
        sql.SQL("SELECT tenant_id, count(*) FROM {}.sessions GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(schema)
        )
    )
    assert owner_view == [("alpha", 1), ("beta", 1)]
