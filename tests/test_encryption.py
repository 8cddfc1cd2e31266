"""RELIABILITY case 14: encryption at rest as a wrapper over any store.

The canary test runs the whole service (appends, state, a gateway turn and its response
log) over SQLite, PostgreSQL and Redis with encryption on, then reads what the database
holds: the SQLite file with its WAL, every PostgreSQL row of the store's schema, every
Redis value. The same run with encryption off finds the canary, so the search works.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from chatstate.errors import IdempotencyMismatch, ValidationError
from chatstate.model import NewEvent, ToolCall
from chatstate.server import ServerConfig
from chatstate.store import MemoryStore
from chatstate.store.encrypted import ENVELOPE, DecryptionFailed, EncryptedStore
from chatstate.store.keys import StaticKeys, generate_key
from chatstate.store.rules import StoreConfig
from chatstate.testing.backends_redis import require
from helpers.fake_openai import FakeOpenAI
from test_server_support import api

pytest.importorskip("cryptography")

EVENTS = [
    NewEvent.message("user", "the vault code is 4321", name="ann"),
    NewEvent(
        kind="tool_call",
        role="assistant",
        tool_calls=(ToolCall(id="c1", name="open_vault", arguments='{"code": 4321}'),),
    ),
    NewEvent(kind="tool_result", role="tool", tool_call_id="c1", content="opened"),
    NewEvent(
        kind="message",
        role="user",
        content=(
            {"type": "text", "text": "parts"},
            {"type": "image_url", "image_url": {"url": "u"}},
        ),
        extra={"refusal": None},
    ),
    NewEvent(kind="marker", data={"note": "secret marker"}),
]


def _plain(events: list[NewEvent] | tuple[object, ...]) -> list[object]:
    return [
        (e.kind, e.role, e.content, e.tool_calls, e.tool_call_id, e.name, dict(e.data))  # type: ignore[attr-defined]
        for e in events
    ]


async def test_round_trip_rotation_and_tenant_keys() -> None:
    inner = MemoryStore()
    old = generate_key("k1")
    store = EncryptedStore(inner, StaticKeys.from_text(old))
    await store.create_session(tenant_id="a", session_id="s")
    wrote = await store.append(tenant_id="a", session_id="s", events=EVENTS)
    assert _plain(list(wrote.events)) == _plain(EVENTS)
    raw = await inner.read(tenant_id="a", session_id="s")
    assert all(str(e.data[ENVELOPE]).startswith("k1:") for e in raw)
    assert "4321" not in repr(raw) and "secret marker" not in repr(raw)
    assert [e.tool_calls[0].id for e in raw if e.tool_calls] == ["c1"]  # ids stay clear

    # Rotation: a new current key; old events still open, new ones use the new key.
    rotated = EncryptedStore(inner, StaticKeys.from_text(generate_key("k2") + "," + old))
    await rotated.append(tenant_id="a", session_id="s", events=[NewEvent.message("user", "new")])
    back = await rotated.read(tenant_id="a", session_id="s")
    assert _plain(back[:5]) == _plain(EVENTS) and back[5].content == "new"
    keys = [
        str(e.data[ENVELOPE]).split(":")[0] for e in await inner.read(tenant_id="a", session_id="s")
    ]
    assert keys == ["k1"] * 5 + ["k2"]

    # Without the old key, old events read as unreadable, never as an error.
    forgot = EncryptedStore(inner, StaticKeys.from_text(generate_key("k2")))
    lost = await forgot.read(tenant_id="a", session_id="s")
    assert [e.unreadable for e in lost[:5]] == ["unreadable"] * 5

    # State documents: sealed, versioned, opened.
    doc = await store.put_state(
        tenant_id="a", session_id="s", data={"facts": {"code": "4321"}}, expected_version=0
    )
    assert doc.version == 1 and dict(doc.data) == {"facts": {"code": "4321"}}
    assert "4321" not in repr(await inner.get_state(tenant_id="a", session_id="s"))
    assert dict((await store.get_state(tenant_id="a", session_id="s")).data) == doc.data

    # Input rules still hold on what is sealed.
    with pytest.raises(ValidationError):
        await store.append(tenant_id="a", session_id="s", events=[NewEvent.message("user", "\x00")])


async def test_ciphertext_moved_to_another_row_does_not_open() -> None:
    inner = MemoryStore()
    store = EncryptedStore(inner, StaticKeys.from_text(generate_key()))
    for sid in ("s", "t"):
        await store.create_session(tenant_id="a", session_id=sid)
    await store.create_session(tenant_id="b", session_id="s")
    await store.append(
        tenant_id="a",
        session_id="s",
        events=[NewEvent.message("user", "one"), NewEvent.message("user", "two")],
    )
    sealed = [e.draft() for e in await inner.read(tenant_id="a", session_id="s")]
    # Another session, another tenant, another position in the same session.
    await inner.append(tenant_id="a", session_id="t", events=sealed[:1])
    await inner.append(tenant_id="b", session_id="s", events=sealed[:1])
    await inner.append(tenant_id="a", session_id="s", events=sealed[:1])
    for tenant, sid, seq in (("a", "t", 1), ("b", "s", 1), ("a", "s", 3)):
        got = (await store.read(tenant_id=tenant, session_id=sid))[seq - 1]
        assert got.unreadable == "unreadable" and "decrypt" in str(got.data["problem"])
    assert [e.content for e in (await store.read(tenant_id="a", session_id="s"))[:2]] == [
        "one",
        "two",
    ]
    # A state document moved to another session does not open either.
    await store.put_state(tenant_id="a", session_id="s", data={"x": 1}, expected_version=0)
    stolen = await inner.get_state(tenant_id="a", session_id="s")
    await inner.put_state(tenant_id="a", session_id="t", data=stolen.data, expected_version=0)
    with pytest.raises(DecryptionFailed):
        await store.get_state(tenant_id="a", session_id="t")


async def test_state_per_branch_is_sealed_to_its_branch() -> None:
    """main's document keeps the associated data it had before state was per branch (a
    document sealed that way still opens); another branch's binds the branch too, so a
    document copied between branches does not open."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    inner = MemoryStore()
    keys = StaticKeys.from_text(generate_key("k1"))
    store = EncryptedStore(inner, keys)
    await store.create_session(tenant_id="a", session_id="s")
    await store.fork(tenant_id="a", session_id="s", new_branch="alt")
    # Sealed as the code before branches did: associated data tenant, session, "state", v.
    nonce = b"\x01" * 12
    old_aad = "\x1f".join(["a", "s", "state", "1"]).encode()
    sealed = nonce + AESGCM(keys.key("a", "k1")).encrypt(nonce, b'{"plan":"gold"}', old_aad)
    envelope = "k1:" + base64.b64encode(sealed).decode()
    await inner.put_state(
        tenant_id="a", session_id="s", data={ENVELOPE: envelope}, expected_version=0
    )
    assert dict((await store.get_state(tenant_id="a", session_id="s")).data) == {"plan": "gold"}

    await store.put_state(
        tenant_id="a", session_id="s", branch="alt", data={"plan": "alt"}, expected_version=0
    )
    alt = await store.get_state(tenant_id="a", session_id="s", branch="alt")
    assert (alt.version, dict(alt.data)) == (1, {"plan": "alt"})
    # alt's ciphertext copied to main at the same version does not open, nor main's to alt.
    raw_alt = await inner.get_state(tenant_id="a", session_id="s", branch="alt")
    await store.create_session(tenant_id="a", session_id="t")
    await store.fork(tenant_id="a", session_id="t", new_branch="alt")
    await inner.put_state(tenant_id="a", session_id="t", data=raw_alt.data, expected_version=0)
    with pytest.raises(DecryptionFailed):
        await store.get_state(tenant_id="a", session_id="t")
    raw_main = await inner.get_state(tenant_id="a", session_id="s")
    await inner.put_state(
        tenant_id="a", session_id="s", branch="alt", data=raw_main.data, expected_version=1
    )
    with pytest.raises(DecryptionFailed):
        await store.get_state(tenant_id="a", session_id="s", branch="alt")


async def test_idempotent_retry_is_a_replay_even_after_other_appends() -> None:
    store = EncryptedStore(MemoryStore(), StaticKeys.from_text(generate_key()))
    await store.create_session(tenant_id="a", session_id="s")
    first = await store.append(
        tenant_id="a", session_id="s", events=EVENTS[:1], idempotency_key="k"
    )
    await store.append(tenant_id="a", session_id="s", events=[NewEvent.message("user", "x")])
    again = await store.append(
        tenant_id="a", session_id="s", events=EVENTS[:1], idempotency_key="k"
    )
    assert again.replayed and again.first_seq == first.first_seq == 1
    assert again.events[0].content == EVENTS[0].content
    with pytest.raises(IdempotencyMismatch):
        await store.append(
            tenant_id="a",
            session_id="s",
            events=[NewEvent.message("user", "other")],
            idempotency_key="k",
        )


# -- the canary at rest --------------------------------------------------------------------


def _sqlite_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


async def _postgres_bytes() -> bytes:
    import psycopg
    from psycopg import sql

    from chatstate.testing.backends_postgres import server_url

    out: list[str] = []
    async with await psycopg.AsyncConnection.connect(server_url()) as conn:
        tables = await (
            await conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema LIKE 'cs_test_%%' AND table_type = 'BASE TABLE'"
            )
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            out += [row[0] for row in await (await conn.execute(query)).fetchall()]
    return "\n".join(out).encode()


async def _redis_bytes() -> bytes:
    import redis.asyncio as redis

    from chatstate.testing.backends_redis import redis_url

    out: list[bytes] = []
    client = redis.Redis.from_url(redis_url())
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                out.append(await client.get(key) or b"")
            elif kind == "hash":
                out += [k + b"=" + v for k, v in (await client.hgetall(key)).items()]
            elif kind == "list":
                out += await client.lrange(key, 0, -1)
            elif kind == "set":
                out += list(await client.smembers(key))
            elif kind == "zset":
                out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in await client.xrange(key):
                    out += [k + b"=" + v for k, v in fields.items()]
    finally:
        await client.aclose()
    return b"\n".join(out)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_a_canary_is_nowhere_at_rest_with_encryption_on(
    backend: str, encrypted: bool, tmp_path: Path
) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    spec = require(backend)
    async with spec.open(StoreConfig(), tmp_path) as store:
        with FakeOpenAI(f"answer {canary} told") as fake:
            config = ServerConfig(
                dev_mode=True,
                upstream_base_url=fake.base_url,
                encryption_keys=generate_key() if encrypted else None,
            )
            async with api(config, store) as a:
                c = a.client
                await c.post("/v1/sessions", json={"id": "s"})
                message = {"role": "user", "content": f"my name is {canary}"}
                assert (
                    await c.post("/v1/sessions/s/events", json={"events": [message]})
                ).status_code == 201
                state = {"data": {"facts": {"name": canary}}}
                assert (await c.put("/v1/sessions/s/state", json=state)).status_code == 200
                chat = await c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "m",
                        "session_id": "s",
                        "stream": True,
                        "messages": [{"role": "user", "content": f"who is {canary}?"}],
                    },
                )
                assert chat.text.count("event: done") == 1
                # Read back through the service: everything opens.
                log = (await c.get("/v1/sessions/s/events")).json()["data"]
                assert any(canary in str(e["content"]) for e in log)
                assert canary in str((await c.get("/v1/sessions/s/state")).json()["data"])
                rid = chat.headers["x-response-id"]
                replay = await c.get(f"/v1/responses/{rid}/events")
                assert canary in replay.text
                if backend == "sqlite":
                    at_rest = _sqlite_bytes(tmp_path)
                elif backend == "postgres":
                    at_rest = await _postgres_bytes()
                else:
                    at_rest = await _redis_bytes()
                assert (canary.encode() in at_rest) is not encrypted
