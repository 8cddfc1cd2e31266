"""The inspector's pages over ASGI (no browser): keys and tenants, the write scope and its
confirmation, the rebuilt context of a past turn, /docs from packaged assets, and the
package data that carries the templates."""

from __future__ import annotations

import fnmatch
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from chatstate.context.engine import ContextEngine
from chatstate.model import Event, NewEvent
from chatstate.server import ServerConfig
from chatstate.server.ui import insight
from chatstate.server.ui.access import COOKIE
from chatstate.store.memory import MemoryStore
from test_server_support import api

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ServerConfig(dev_mode=False, key_cache_seconds=0)
CHAT = [
    {"role": "user", "content": "My account number is 48213."},
    {"role": "assistant", "content": "Thanks, noted."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "What is your account number?"},
]


async def test_pages_need_a_key_and_show_only_the_callers_tenant() -> None:
    async with api(CONFIG) as a:
        acme, globex = await a.key("acme", "read,write"), await a.key("globex", "read")
        await a.client.post("/v1/sessions", json={"id": "s1", "user_id": "ann"}, headers=acme)
        await a.client.post("/v1/sessions/s1/events", json={"events": CHAT}, headers=acme)
        r = await a.client.get("/ui/s/s1")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
        assert (await a.client.get("/ui/s/s1/live")).status_code == 401
        page = await a.client.get("/ui", headers=acme)
        assert page.status_code == 200 and 'data-session="s1"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert 'data-session="s1"' not in (await a.client.get("/ui", headers=globex)).text
        for path in ("", "/context", "/state", "/health", "/live"):
            r = await a.client.get(f"/ui/s/s1{path}", headers=globex)
            assert r.status_code == 404, path
            assert "48213" not in r.text and "ann" not in r.text
            assert (await a.client.get(f"/ui/s/s1{path}", headers=acme)).status_code == 200
        assert (await a.client.get("/ui/s/s1", headers=auth_bad())).status_code == 303


def auth_bad() -> dict[str, str]:
    return {"Authorization": "Bearer cs_0123456789abcdef_not-a-real-secret-at-all"}


async def test_login_keeps_the_key_in_a_strict_http_only_cookie() -> None:
    async with api(CONFIG) as a:
        key = (await a.key("acme", "read"))["Authorization"].split()[1]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await a.client.post("/ui/login", content="key=cs_nope", headers=form)
        assert r.status_code == 401 and "Unknown or revoked key" in r.text
        body = f"key={key}&next=https://elsewhere.example/"
        r = await a.client.post("/ui/login", content=body, headers=form)
        assert r.status_code == 303 and r.headers["location"] == "/ui"  # no open redirect
        cookie = r.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        a.client.cookies.set(COOKIE, key)
        r = await a.client.get("/ui")
        assert r.status_code == 200 and "tenant <b>acme</b>" in r.text
        evil = {**form, "Origin": "https://elsewhere.example"}
        r = await a.client.post("/ui/login", content=f"key={key}", headers=evil)
        assert r.status_code == 403


async def test_development_mode_needs_no_login() -> None:
    async with api(ServerConfig(dev_mode=True)) as a:
        await a.client.post("/v1/sessions", json={"id": "dev-s"})
        r = await a.client.get("/ui")
        assert r.status_code == 200 and 'data-session="dev-s"' in r.text


async def test_delete_and_fork_need_write_a_confirmation_and_this_origin() -> None:
    async with api(CONFIG) as a:
        writer, reader = await a.key("acme", "read,write"), await a.key("acme", "read")
        await a.client.post("/v1/sessions", json={"id": "s1"}, headers=writer)
        await a.client.post("/v1/sessions/s1/events", json={"events": CHAT}, headers=writer)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await a.client.get("/ui/s/s1/delete", headers=reader)).status_code == 403
        r = await a.client.post("/ui/s/s1/delete", content="confirm=s1", headers=reader | form)
        assert r.status_code == 403
        r = await a.client.post("/ui/s/s1/delete", content="confirm=s2", headers=writer | form)
        assert r.status_code == 422
        foreign = writer | form | {"Origin": "https://elsewhere.example"}
        r = await a.client.post("/ui/s/s1/delete", content="confirm=s1", headers=foreign)
        assert r.status_code == 403
        assert (await a.client.get("/v1/sessions/s1", headers=writer)).status_code == 200

        r = await a.client.post("/ui/s/s1/fork", content="at=2&name=alt", headers=reader | form)
        assert r.status_code == 403
        r = await a.client.post("/ui/s/s1/fork", content="at=2&name=alt", headers=writer | form)
        assert r.status_code == 303
        branches = (await a.client.get("/v1/sessions/s1/branches", headers=writer)).json()
        assert {b["name"]: b["fork_seq"] for b in branches["data"]} == {"main": None, "alt": 2}

        r = await a.client.post("/ui/s/s1/delete", content="confirm=s1", headers=writer | form)
        assert r.status_code == 303
        assert (await a.client.get("/v1/sessions/s1", headers=writer)).status_code == 404


async def test_a_past_turn_is_rebuilt_as_the_engine_built_it_then() -> None:
    """The manifest the inspector shows for turn N equals the one built at turn N, even
    after later turns, a summary and state changes; and rebuilding it writes nothing."""
    store = MemoryStore()
    engine = ContextEngine(store, auto_compact=False)
    await store.create_session(tenant_id="t", session_id="s")
    lines = [f"message number {i} about order {1000 + i} and its delivery" for i in range(29)]
    for i, text in enumerate(lines):
        role = "user" if i % 2 == 0 else "assistant"
        await engine.append("s", [NewEvent.message(role, text)], tenant_id="t")
    then = await engine.build("s", tenant_id="t", model="gpt-4o", budget=150)
    turn = 29  # the user message at the head when ``then`` was built
    assert then.manifest.sections["current"] > 0 and then.manifest.dropped
    summary = NewEvent(kind="summary", data={"from_seq": 1, "to_seq": 10, "text": "early talk"})
    later = [NewEvent.message("assistant", "answer"), summary, NewEvent.message("user", "more")]
    await engine.append("s", later, tenant_id="t")
    head = (await store.list_branches(tenant_id="t", session_id="s"))[0].head_seq
    now = await insight.context_at(
        store, "t", "s", branch="main", seq=turn, model="gpt-4o", budget=150
    )
    assert then.manifest.verbatim == now.manifest.verbatim
    assert then.manifest.retrieved == now.manifest.retrieved
    assert then.manifest.dropped == now.manifest.dropped
    assert then.manifest.summary == now.manifest.summary is None
    assert then.messages == now.messages
    assert (await store.list_branches(tenant_id="t", session_id="s"))[0].head_seq == head
    await engine.aclose()
    await store.close()


def test_health_over_time_drops_at_the_flagged_message() -> None:
    now = datetime.now(UTC)
    events = [
        Event(seq=i + 1, branch="main", created_at=now, kind="message", role=m["role"],  # type: ignore[arg-type]
              content=m["content"])
        for i, m in enumerate(CHAT)
    ]  # fmt: skip
    view = insight.health_view(events, None)
    assert [f.detector for f in view.report.flags] == ["re_ask"]
    assert view.series[0] == (1, 1.0)
    assert view.series[-1][0] == 4 and view.series[-1][1] < 1.0
    assert [m[3] for m in view.marks] == [4]


async def test_docs_are_served_from_packaged_assets() -> None:
    async with api(CONFIG) as a:
        page = await a.client.get("/docs")
        assert page.status_code == 200
        assert "https://" not in page.text and "http://" not in page.text
        assert "/docs/assets/swagger-ui-bundle.js" in page.text
        script = await a.client.get("/docs/assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000
        assert (await a.client.get("/docs/assets/swagger-ui.css")).status_code == 200
        assert (await a.client.get("/redoc")).status_code == 404
        schema = (await a.client.get("/openapi.json")).json()
        assert schema["paths"] and not [p for p in schema["paths"] if p.startswith("/ui")]
        css = await a.client.get("/ui/static/ui.css")
        assert css.status_code == 200 and "budget-bar" in css.text


def test_package_data_carries_every_template_and_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["chatstate"]
    package = ROOT / "src" / "chatstate"
    shipped = [
        p.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for p in (package / "server" / "ui" / folder).rglob("*")
        if p.is_file()
    ]
    assert len(shipped) > 10
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


async def test_long_timelines_page_per_lane_and_focus_finds_an_old_seq() -> None:
    async with api(ServerConfig(dev_mode=True, max_events_per_append=500)) as a:
        await a.client.post("/v1/sessions", json={"id": "long"})
        chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"line {i}"}
                for i in range(340)]  # fmt: skip
        r = await a.client.post("/v1/sessions/long/events", json={"events": chat})
        assert r.status_code == 201
        newest = await a.client.get("/ui/s/long")
        assert 'id="e-main-340"' in newest.text and 'id="e-main-40"' not in newest.text
        assert "data-live=" in newest.text and "paged-notice" not in newest.text
        assert "?lane=main&before=41" in newest.text
        older = await a.client.get("/ui/s/long?lane=main&before=41")
        assert 'id="e-main-40"' in older.text and 'id="e-main-41"' not in older.text
        assert "paged-notice" in older.text and "data-live=" not in older.text
        focused = await a.client.get("/ui/s/long?focus=12&lane=main")
        assert 'class="focus"' in focused.text and 'id="e-main-12"' in focused.text
        recent = await a.client.get("/ui/s/long?focus=300&lane=main")
        assert "data-live=" in recent.text and 'id="e-main-300"' in recent.text


async def test_state_page_shows_the_chosen_branch() -> None:
    """The inspector's state view reads one branch's document (``?branch=``); a fork made
    in the inspector starts from the state at its fork point."""
    async with api(CONFIG) as a:
        key = await a.key("acme", "read,write")
        c = a.client
        await c.post("/v1/sessions", json={"id": "s1"}, headers=key)
        await c.post("/v1/sessions/s1/events", json={"events": CHAT[:2]}, headers=key)
        facts = "/v1/sessions/s1/state/facts"
        await c.post(facts, json={"key": "plan", "value": "gold-tier"}, headers=key)
        form = {**key, "Content-Type": "application/x-www-form-urlencoded", "Origin": "http://test"}
        made = await c.post("/ui/s/s1/fork", content="at=3&name=alt&branch=main", headers=form)
        assert made.status_code == 303, made.text
        await c.post(facts, json={"key": "city", "value": "Reykjavik"}, headers=key)
        alt_fact = {"key": "pet", "value": "axolotl"}
        await c.post(facts, params={"branch": "alt"}, json=alt_fact, headers=key)
        main = await c.get("/ui/s/s1/state", headers=key)
        alt = await c.get("/ui/s/s1/state", params={"branch": "alt"}, headers=key)
        assert main.status_code == alt.status_code == 200
        assert "Reykjavik" in main.text and "axolotl" not in main.text
        assert "axolotl" in alt.text and "Reykjavik" not in alt.text and "gold-tier" in alt.text
        assert '<b id="state-of">alt</b>' in alt.text
        assert (await c.get("/ui/s/s1/state?branch=nope", headers=key)).status_code == 404
