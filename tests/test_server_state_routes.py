"""Fact changes and the health report over HTTP."""

from __future__ import annotations

from chatstate.server import ServerConfig
from test_server_support import api


async def test_facts_can_be_set_corrected_and_deleted() -> None:
    async with api(ServerConfig(dev_mode=False, key_cache_seconds=0)) as a:
        key = await a.key("acme", "read,write")
        await a.client.post("/v1/sessions", json={"id": "s"}, headers=key)
        url = "/v1/sessions/s/state/facts"
        r = await a.client.post(url, json={"key": "account", "value": "48123"}, headers=key)
        assert r.status_code == 200 and "48123" in r.text
        r = await a.client.post(
            url, json={"op": "correct", "key": "account", "value": "48213"}, headers=key
        )
        facts = r.json()["data"]["facts"]
        assert "48213" in str(facts) and "48123" in str(facts)  # the old value is history
        assert (
            await a.client.post(url, json={"op": "set", "key": "x"}, headers=key)
        ).status_code == 422
        r = await a.client.post(url, json={"op": "delete", "key": "account"}, headers=key)
        assert "48213" not in str(r.json()["data"].get("facts"))
        log = (await a.client.get("/v1/sessions/s/events", headers=key)).json()["data"]
        assert [e["kind"] for e in log] == ["state", "state", "state"]
        assert (
            await a.client.post(
                "/v1/sessions/nope/state/facts", json={"key": "k", "value": "v"}, headers=key
            )
        ).status_code == 404


async def test_health_report_flags_a_re_ask_with_evidence() -> None:
    async with api(ServerConfig(dev_mode=False, key_cache_seconds=0)) as a:
        key = await a.key("acme", "read,write")
        await a.client.post("/v1/sessions", json={"id": "s"}, headers=key)
        events = [
            {"role": "user", "content": "My account number is 48213."},
            {"role": "assistant", "content": "Thanks, looking at it."},
            {"role": "user", "content": "Any news?"},
            {"role": "assistant", "content": "Could you give me your account number?"},
        ]
        await a.client.post("/v1/sessions/s/events", json={"events": events}, headers=key)
        report = (await a.client.get("/v1/sessions/s/health", headers=key)).json()
        flags = [f for f in report["flags"] if f["detector"] == "re_ask"]
        assert flags and flags[0]["evidence"] == [1, 4]
        clean = await a.client.post("/v1/sessions", json={"id": "c"}, headers=key)
        assert clean.status_code == 201
        r = await a.client.get("/v1/sessions/c/health", headers=key)
        assert r.status_code == 200 and r.json()["flags"] == []


async def test_put_state_is_a_state_event_no_sync_undoes() -> None:
    """Issue 11, finding 5: a PUT that removes an extracted fact kept the keeper's cursors
    only by luck of the document's shape; the next sync re-read the log from seq 0 and
    brought the fact back. The PUT is now a ``replace`` state event in the log, the
    cursors stay, and a sync or a rebuild from the log keeps the removal."""
    from chatstate.state import StateKeeper
    from chatstate.state.fold import rebuild_state

    async with api(ServerConfig(dev_mode=False, key_cache_seconds=0)) as a:
        key = await a.key("acme", "read,write")
        await a.client.post("/v1/sessions", json={"id": "s"}, headers=key)
        said = [{"role": "user", "content": "My email is alice@example.com."}]
        await a.client.post("/v1/sessions/s/events", json={"events": said}, headers=key)
        keeper = StateKeeper(a.store)
        await keeper.sync("s", tenant_id="acme")
        got = await a.client.get("/v1/sessions/s/state", headers=key)
        data = got.json()["data"]
        assert "alice@example.com" in str(data["facts"])
        # The keeper's bookkeeping is beside the user's document, not in it.
        cursors = got.json()["keeper"]
        assert cursors and not any(k.startswith("_") for k in data)
        mine = dict(data)
        mine["facts"] = {}
        mine["ticket"] = "T-7"
        put = await a.client.put(
            "/v1/sessions/s/state",
            json={"data": {**mine, "_upto": 0, "_extracted": 0}},  # bookkeeping is not the user's
            headers=key | {"If-Match": got.headers["etag"]},
        )
        assert put.status_code == 200, put.text
        assert put.json()["keeper"]["_extracted"] == cursors["_extracted"]
        assert "_extracted" not in put.json()["data"]
        more = [{"role": "assistant", "content": "Thanks, noted."}]
        await a.client.post("/v1/sessions/s/events", json={"events": more}, headers=key)
        after = (await keeper.sync("s", tenant_id="acme")).state.data
        assert "alice@example.com" not in str(after["facts"]) and after["ticket"] == "T-7"
        log = await a.store.read(tenant_id="acme", session_id="s", limit=100)
        assert [e.data.get("op") for e in log if e.kind == "state"][-1] == "replace"
        rebuilt = rebuild_state(log)
        assert "alice@example.com" not in str(rebuilt["facts"]) and rebuilt["ticket"] == "T-7"
        stale = await a.client.put(
            "/v1/sessions/s/state", json={"data": {}}, headers=key | {"If-Match": '"1"'}
        )
        assert stale.status_code == 412
