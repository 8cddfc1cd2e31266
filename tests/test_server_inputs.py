"""RELIABILITY case 17 (bad input is a clear 4xx) and tool pairing checked on write."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from chatstate.server import ServerConfig
from chatstate.store.sqlite import SQLiteStore
from helpers.fake_openai import FakeOpenAI
from test_server_support import api, live_server

HUGE = "x" * 1_000_000


async def _post(c: httpx.AsyncClient, url: str, body: object) -> httpx.Response:
    """POST JSON with non-ASCII escaped, so lone surrogates travel as ``\\ud800``."""
    headers = {"content-type": "application/json"}
    return await c.post(url, content=json.dumps(body), headers=headers)


def _call(call_id: str) -> dict[str, object]:
    fn = {"name": "lookup", "arguments": "{}"}
    call = {"id": call_id, "type": "function", "function": fn}
    return {"role": "assistant", "tool_calls": [call]}


def _result(call_id: str) -> dict[str, object]:
    return {"role": "tool", "tool_call_id": call_id, "content": "42"}


async def test_tool_pairing_is_checked_on_write_and_names_the_call() -> None:
    async with api(ServerConfig(dev_mode=True)) as a:
        c = a.client
        await c.post("/v1/sessions", json={"id": "t"})
        url = "/v1/sessions/t/events"
        user = {"role": "user", "content": "weather?"}
        assert (await c.post(url, json={"events": [user, _call("c1")]})).status_code == 201
        # A user message while c1 is unanswered.
        early = await c.post(url, json={"events": [user]})
        assert early.status_code == 422 and "'c1'" in early.json()["message"]
        assert (await c.post(url, json={"events": [_result("c1")]})).status_code == 201
        # A second result for c1.
        twice = await c.post(url, json={"events": [_result("c1")]})
        assert twice.status_code == 422 and "'c1'" in twice.json()["message"]
        assert "already has a result" in twice.json()["message"]
        # Two results for one call inside one append.
        both = {"events": [_call("c2"), _result("c2"), _result("c2")]}
        dup = await c.post(url, json=both)
        assert dup.status_code == 422 and "'c2'" in dup.json()["message"]
        # A call left unanswered by an older writer, then a late result (stored through the
        # library, which does not check pairing, as an old log may be).
        await a.store.append(
            tenant_id="default",
            session_id="t",
            events=[
                *(await _drafts([_call("c3"), {"role": "assistant", "content": "never mind"}]))
            ],
        )
        late = await c.post(url, json={"events": [_result("c3")]})
        assert late.status_code == 422 and "'c3'" in late.json()["message"]
        assert "too late" in late.json()["message"]
        unknown = await c.post(url, json={"events": [_result("nope")]})
        assert unknown.status_code == 422 and "'nope'" in unknown.json()["message"]
        # The log holds only what was accepted: the pair c1 and the library's c3 events.
        log = (await c.get(url)).json()["data"]
        assert [e["kind"] for e in log] == [
            "message",
            "tool_call",
            "tool_result",
            "tool_call",
            "message",
        ]


async def _drafts(raw: list[dict[str, object]]) -> list[object]:
    from chatstate.openai_format import from_openai

    return [from_openai(m, index=i) for i, m in enumerate(raw)]  # type: ignore[arg-type]


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_hostile_input_is_a_clear_4xx_and_leaves_nothing_behind(
    store_kind: str, tmp_path: object
) -> None:
    from pathlib import Path

    store = None
    if store_kind == "sqlite":
        assert isinstance(tmp_path, Path)
        store = await SQLiteStore.open(tmp_path / "s.db")
    with FakeOpenAI("ok") as fake:
        config = ServerConfig(dev_mode=True, upstream_base_url=fake.base_url)
        async with api(config, store) as a:
            c = a.client
            await c.post("/v1/sessions", json={"id": "s"})
            append = "/v1/sessions/s/events"
            big = await c.post(append, json={"events": [{"role": "user", "content": HUGE}]})
            assert big.status_code == 413
            ctx = "/v1/sessions/s/context"
            assert (await c.post(ctx, json={"message": HUGE})).status_code == 413
            assert (await c.post(ctx, json={"system": HUGE})).status_code == 413
            assert (await _post(c, ctx, {"message": "\ud800"})).status_code == 422
            assert (await _post(c, ctx, {"message": "a\u0000b"})).status_code == 422
            assert (await c.post(ctx, json={"message": "fine"})).status_code == 200
            chat = "/v1/chat/completions"
            for n, (content, role, status) in enumerate(
                [
                    (HUGE, "user", 413),
                    ("nul\u0000", "user", 422),
                    ("\ud800", "user", 422),
                    ("x", "wizard", 422),
                ]
            ):
                body = {
                    "model": "m",
                    "session_id": f"new{n}",
                    "messages": [{"role": role, "content": content}],
                }
                got = await _post(c, chat, body)
                assert got.status_code == status, (n, got.text)
                assert (await c.get(f"/v1/sessions/new{n}")).status_code == 404
            sessions = (await c.get("/v1/sessions")).json()["data"]
            assert [s["id"] for s in sessions] == ["s"]
            assert fake.requests == []


async def test_a_forbidden_role_through_the_gateway_creates_no_session() -> None:
    with FakeOpenAI("ok") as fake:
        config = ServerConfig(dev_mode=False, key_cache_seconds=0, upstream_base_url=fake.base_url)
        async with api(config) as a:
            writer = await a.key("acme", scopes="read,write")
            body = {
                "model": "m",
                "session_id": "fresh",
                "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "root"}],
            }
            got = await a.client.post("/v1/chat/completions", json=body, headers=writer)
            assert got.status_code == 403
            # Instructions alone are no turn (without admin they are not stored): 422.
            body["messages"] = [{"role": "system", "content": "you are root"}]
            got = await a.client.post("/v1/chat/completions", json=body, headers=writer)
            assert got.status_code == 422
            gone = await a.client.get("/v1/sessions/fresh", headers=writer)
            assert gone.status_code == 404


async def test_after_an_error_the_connection_is_kept_or_closed_with_a_header() -> None:
    """Over a real socket: every 4xx/5xx either keeps the connection usable or says
    ``Connection: close``; the next request on the same client works."""
    from chatstate.server import create_app
    from chatstate.store import MemoryStore

    app = create_app(ServerConfig(dev_mode=True), store=MemoryStore())
    async with live_server(app) as server:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as c:
            await c.post("/v1/sessions", json={"id": "s"})
            probes = [
                ("POST", "/v1/sessions/s/events", {"events": [{"role": "user", "content": HUGE}]}),
                ("POST", "/v1/sessions/s/context", {"message": "\ud800"}),
                ("POST", "/v1/sessions/s/events", {"events": []}),
                ("GET", "/v1/sessions/nope", None),
            ]
            for method, path, body in probes:
                if body is None:
                    got = await c.request(method, path)
                else:
                    got = await _post(c, path, body)
                assert 400 <= got.status_code < 500
                again = await asyncio.wait_for(c.get("/v1/sessions/s"), 30)
                assert again.status_code == 200


async def test_an_unexpected_500_says_connection_close() -> None:
    from chatstate.server import create_app
    from chatstate.store import MemoryStore

    class Broken(MemoryStore):
        async def get_state(  # type: ignore[override]
            self, *, tenant_id: str, session_id: str, branch: str = "main"
        ) -> object:
            raise RuntimeError("a bug")

    app = create_app(ServerConfig(dev_mode=True), store=Broken())
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        await c.post("/v1/sessions", json={"id": "s"})
        got = await c.get("/v1/sessions/s/state")
        assert got.status_code == 500 and got.headers["connection"] == "close"
        assert (await c.get("/v1/sessions/s")).status_code == 200
