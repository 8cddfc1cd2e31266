"""A running ``chatstate`` server with a seeded session, for the inspector's tests.

:class:`Seeded` serves the app from SQLite in a thread of its own (uvicorn on a real
127.0.0.1 socket) with ``tests/helpers/fake_openai.py`` as the upstream, and fills tenant
``acme`` through the HTTP API with session ``support-1``: messages, a tool call and its
result, a summary, a re-ask the health detectors flag, a gateway turn (after which the
state keeper extracts facts and records the flag), a correction through the state API,
and a fork with its own events.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from chatstate.server import ServerConfig, create_app, create_key
from chatstate.store.url import open_store
from helpers.fake_openai import FakeOpenAI

__all__ = ["Seeded"]

USER = "alice"
SESSION = "support-1"


async def _keys(url: str) -> dict[str, str]:
    store = await open_store(url)
    try:
        return {
            "admin": await create_key(store, tenant="acme", scopes="read,write,admin"),
            "reader": await create_key(store, tenant="acme", scopes="read"),
            "writer": await create_key(store, tenant="acme", scopes="read,write"),
            "other": await create_key(store, tenant="globex", scopes="read,write"),
        }
    finally:
        await store.close()


class Seeded:
    def __init__(self, workdir: Path) -> None:
        self.database_url = f"sqlite:///{workdir / 'ui.db'}"
        self.keys: dict[str, str] = {}
        # A thread of its own: Playwright's sync API keeps an event loop in this one.
        maker = threading.Thread(
            target=lambda: self.keys.update(asyncio.run(_keys(self.database_url)))
        )
        maker.start()
        maker.join(60)
        self.fake = FakeOpenAI("Refunds reach your card within 5 working days.").start()
        config = ServerConfig(
            database_url=self.database_url,
            upstream_base_url=self.fake.base_url,
            dev_mode=False,
            key_cache_seconds=0,
            rate_per_second=10_000,
            rate_burst=10_000,
            lease_seconds=2.0,
        )
        self.app = create_app(config)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.close()
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def call(self, method: str, path: str, who: str = "admin", **kw: object) -> httpx.Response:
        response = self.http.request(method, path, headers=self.auth(who), **kw)  # type: ignore[arg-type]
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response

    def seed(self) -> None:
        """``support-1`` as the module docstring says; waits for the state keeper."""
        self.call("POST", "/v1/sessions", json={"id": SESSION, "user_id": USER})
        self.call("POST", "/v1/sessions", json={"id": "billing-7", "user_id": "bob"})
        call = {"name": "lookup_order", "arguments": '{"order": "5521"}'}
        summary = "Alice (account 48213377) reported order 5521 missing; the lookup said lost."
        events: list[dict[str, object]] = [
            {"role": "user", "content": "My account number is 48213377. Order 5521 never came."},
            {"role": "assistant", "content": "Sorry about that. Let me look up order 5521."},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "call_1", "type": "function", "function": call}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "lost in transit"}'},
            {"role": "assistant", "content": "The parcel was lost. I've issued a refund of $40."},
            {"role": "user", "content": "Thanks. My email is alice@example.com."},
            {"role": "assistant", "content": "What is your account number?"},
            {"kind": "summary", "data": {"from_seq": 1, "to_seq": 4, "text": summary}},
        ]  # fmt: skip
        self.call("POST", f"/v1/sessions/{SESSION}/events", json={"events": events})
        self.call(
            "POST",
            "/v1/chat/completions",
            json={"model": "gpt-4o", "session_id": SESSION,
                  "messages": [{"role": "user", "content": "When will I get the refund?"}]},
        )  # fmt: skip
        deadline = time.monotonic() + 30  # hang guard: the keeper runs after the turn
        while "_health" not in self.call("GET", f"/v1/sessions/{SESSION}/state").json()["keeper"]:
            assert time.monotonic() < deadline, "the state keeper never recorded health"
            time.sleep(0.05)
        facts = f"/v1/sessions/{SESSION}/state/facts"
        self.call(
            "POST", facts, json={"op": "correct", "key": "account_number", "value": "48213378"}
        )
        self.call("POST", facts, json={"op": "set", "key": "plan", "value": "premium"})
        self.call("POST", f"/v1/sessions/{SESSION}/branches", json={"name": "retry", "at_seq": 5})
        self.call(
            "POST",
            f"/v1/sessions/{SESSION}/events",
            params={"branch": "retry"},
            json={"events": [{"role": "user", "content": "Can you send a replacement instead?"},
                             {"role": "assistant", "content": "Yes, a replacement ships today."}]},
        )  # fmt: skip

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        self._server.should_exit = True
        self._thread.join(20)
        self._sock.close()
        self.fake.close()

    def __enter__(self) -> Seeded:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
