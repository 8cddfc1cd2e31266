"""Shared pieces of the server tests: the app over ASGI, a live socket, a server process.

Imported by the ``tests/test_server_*.py`` modules; it holds no tests itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from chatstate.server import ServerConfig, create_app, create_key
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store

__all__ = ["Api", "LiveServer", "ServerProcess", "api", "auth", "live_server"]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    store: Store

    async def key(self, tenant: str, scopes: str = "read,write") -> dict[str, str]:
        return auth(await create_key(self.store, tenant=tenant, scopes=scopes))


@contextlib.asynccontextmanager
async def api(config: ServerConfig | None = None, store: Store | None = None) -> AsyncIterator[Api]:
    """The app with its lifespan running, and an ``httpx.AsyncClient`` over ASGI."""
    store = store or MemoryStore()
    app = create_app(config or ServerConfig(dev_mode=False, key_cache_seconds=0), store=store)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Api(app, client, store)
    finally:
        await store.close()


@dataclass
class LiveServer:
    base_url: str
    app: FastAPI


@contextlib.asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[LiveServer]:
    """``app`` served by uvicorn on a real 127.0.0.1 socket, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``chatstate serve`` in a child process (for kill -9 tests)."""

    def __init__(self, database_url: str, upstream: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "chatstate",
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            database_url,
            "--upstream-base-url",
            upstream,
        ]
        environ = {**os.environ, **env}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=self._log, env=environ)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready in 30 s")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.contextmanager
def server_process(database_url: str, upstream: str, log_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, upstream, log_path)
    try:
        yield server
    finally:
        server.stop()
