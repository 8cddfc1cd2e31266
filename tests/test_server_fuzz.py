"""Bad input never gets a 5xx: schemathesis over the published OpenAPI schema against a
live server, and hypothesis over message text (accepted text round-trips exactly)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatstate.server import ServerConfig, create_app
from chatstate.store.memory import MemoryStore
from helpers.fake_openai import FakeOpenAI
from test_server_support import api

schemathesis = pytest.importorskip("schemathesis")

SCHEMA = schemathesis.openapi.from_dict(create_app(ServerConfig(dev_mode=True)).openapi())


def _serve(max_body_bytes: int) -> Iterator[str]:
    """A dev-mode server in a thread of its own, with a fake upstream."""
    with FakeOpenAI("fuzzed answer") as fake:
        config = ServerConfig(
            dev_mode=True,
            upstream_base_url=fake.base_url,
            rate_per_second=10_000,
            rate_burst=10_000,
            max_body_bytes=max_body_bytes,
        )
        app = create_app(config, store=MemoryStore())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
        thread.start()
        try:
            for _ in range(500):
                if server.started:
                    break
                threading.Event().wait(0.01)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(20)
            sock.close()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    yield from _serve(256 * 1024)


@pytest.fixture(scope="module")
def roomy_server_url() -> Iterator[str]:
    """The default 4 MiB body limit, so megabyte strings reach the routes."""
    yield from _serve(ServerConfig().max_body_bytes)


@SCHEMA.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case, server_url: str) -> None:
    response = case.call(base_url=server_url, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])


HOSTILE = {
    "lone high surrogate": "\ud800",
    "lone low surrogate": "a\udfffb",
    "NUL": "nul\u0000here",
    "1 M characters": "x" * 1_000_000,
    "3 MB of UTF-8": "\u00e9" * 1_500_000,
    "10 MB (over the body limit)": "y" * 10_000_000,
    "empty": "",
}


def _hostile(value: object, text: str) -> object:
    """``value`` with every string in it replaced by ``text``."""
    if isinstance(value, str):
        return text
    if isinstance(value, list):
        return [_hostile(v, text) for v in value]
    if isinstance(value, dict):
        return {k: _hostile(v, text) for k, v in value.items()}
    return value


@SCHEMA.parametrize()
@SCHEMA.given(name=st.sampled_from(sorted(HOSTILE)))
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_hostile_strings_in_every_body_field_get_no_server_error(
    case: schemathesis.Case, name: str, roomy_server_url: str
) -> None:
    """Lone surrogates, NUL and 1-10 MB strings in every string field of every body."""
    body = _hostile(case.body, HOSTILE[name]) if isinstance(case.body, dict | list) else None
    # Sent by hand: schemathesis would validate the hostile body against the schema first.
    response = httpx.request(
        case.method,
        roomy_server_url + case.formatted_path,
        params=case.query or None,
        content=None if body is None else json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code < 500, (case.method, case.path, name, response.text[:300])


TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts=st.lists(TEXT, min_size=1, max_size=4), name=st.none() | TEXT)
async def test_accepted_text_round_trips_byte_for_byte(texts: list[str], name: str | None) -> None:
    async with api(ServerConfig(dev_mode=True)) as a:
        await a.client.post("/v1/sessions", json={"id": "s1"})
        events = [{"role": "user", "content": t} | ({"name": name} if name else {}) for t in texts]
        r = await a.client.post("/v1/sessions/s1/events", json={"events": events})
        if r.status_code != 201:
            assert r.status_code in (413, 422), r.text
            return
        back = (await a.client.get("/v1/sessions/s1/events")).json()["data"]
        assert [e["content"] for e in back] == texts
        exported = (await a.client.get("/v1/sessions/s1/export")).content.decode()
        assert [json.loads(line)["content"] for line in exported.splitlines()] == texts
