"""A minimal HTTP/1.1 client for load generation on loopback: keep-alive connections over
asyncio streams, no pooling logic beyond a stack of idle connections, no TLS, no
redirects, bodies by ``Content-Length`` only (what ``chatstate serve`` sends).

Why not httpx here: on a machine with few cores the load tool shares the CPU with the
server it measures, and httpx spends about as much CPU per request as the server does,
so an open loop at twice the server's saturation rate saturates the client first and
its own queueing shows up as server latency. This client does a fraction of that work.
It answers with the part of httpx's interface the load tool uses (``post(url,
json=...)``, ``get(url, params=...)``, ``.status_code``, ``.headers``, ``.json()``) and
raises httpx's transport errors, so :func:`chatstate.bench.load.run_load` drives it
unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

__all__ = ["RawClient", "RawResponse"]

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RawResponse:
    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


class RawClient:
    """``async with RawClient(base_url, headers=..., timeout=...) as c``: see the module."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        max_connections: int = 1024,
    ) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"Host: {self._host}:{self._port}\r\n{extra}"
        self._timeout = timeout
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()

    async def post(self, url: str, *, json: object = None) -> RawResponse:
        return await self.request("POST", url, json)

    async def get(self, url: str, *, params: Mapping[str, object] | None = None) -> RawResponse:
        return await self.request("GET", f"{url}?{urlencode(params)}" if params else url, None)

    async def delete(self, url: str) -> RawResponse:
        return await self.request("DELETE", url, None)

    async def request(self, method: str, url: str, payload: object) -> RawResponse:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {url} HTTP/1.1\r\n{self._fixed}Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        data = (head + "\r\n").encode() + body
        async with self._slots:
            try:
                return await asyncio.wait_for(self._exchange(data), self._timeout)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(f"no answer in {self._timeout} s") from exc
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, data: bytes) -> RawResponse:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        keep = False
        try:
            writer.write(data)
            status_line = await reader.readline()
            if not status_line:
                raise asyncio.IncompleteReadError(b"", None)
            status = int(status_line.split(b" ", 2)[1])
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            content = await reader.readexactly(int(headers.get("content-length", "0")))
            keep = headers.get("connection", "").lower() != "close"
            return RawResponse(status, headers, content)
        finally:
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
