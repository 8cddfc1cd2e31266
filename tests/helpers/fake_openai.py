"""A small OpenAI-compatible chat server on 127.0.0.1, for tests that need a real socket.

It serves ``POST /v1/chat/completions`` (plain JSON, or server-sent events when the body
says ``"stream": true``) and ``GET /v1/models``, records every request, answers with a
scripted reply, and fails on demand. Use it as a context manager or as the ``fake_openai``
pytest fixture defined here (import the function under its own name, which registers
the fixture for the importing module)::

    from helpers.fake_openai import FakeOpenAI
    from helpers.fake_openai import fake_openai_fixture  # noqa: F401 (the fixture)

    def test_x(fake_openai: FakeOpenAI) -> None:
        fake_openai.set_reply(lambda request: f"you said {request.messages[-1]['content']}")
        fake_openai.fail(status=500)          # the next request gets HTTP 500
        fake_openai.hang(3.0)                 # the one after waits 3 s, then answers
        fake_openai.disconnect(after_chunks=2)  # a stream cut after two content chunks
        ... client(base_url=fake_openai.base_url, api_key="test-key") ...
        assert fake_openai.requests[-1].body["model"] == "m"

Replies: a fixed text, a :class:`FakeReply` (content, tool calls, finish reason), or a
callable from the :class:`RecordedRequest` to either. Streaming splits the content into
chunks of ``chunk_words`` words, ``chunk_delay`` seconds apart, then a chunk with the
``finish_reason``, a usage chunk when ``stream_options.include_usage`` is set, and
``data: [DONE]``. Usage counts are a rough len/4 estimate. With ``api_key`` set, requests
without ``Authorization: Bearer <api_key>`` get 401. Faults queue up and each applies to
one request (``times=None``: every request until :meth:`FakeOpenAI.clear_faults`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import cast

import pytest

__all__ = ["FakeOpenAI", "FakeReply", "Fault", "RecordedRequest", "fake_openai_fixture"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names lowercased."""
    body: Mapping[str, object]
    """The parsed JSON body (``{}`` when there was none or it was not JSON)."""

    @property
    def model(self) -> str | None:
        value = self.body.get("model")
        return value if isinstance(value, str) else None

    @property
    def messages(self) -> list[dict[str, object]]:
        value = self.body.get("messages")
        return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


@dataclass(frozen=True)
class FakeReply:
    """What the assistant answers. ``tool_calls`` are OpenAI ``tool_calls`` entries."""

    content: str | None = ""
    tool_calls: tuple[Mapping[str, object], ...] = ()
    finish_reason: str | None = None
    """Defaults to ``tool_calls`` when there are tool calls, else ``stop``."""


@dataclass(frozen=True)
class Fault:
    """How to misbehave on one request. ``hang`` comes first, then the rest."""

    status: int | None = None
    """Answer with this HTTP status and an OpenAI-style error body."""
    hang: float = 0.0
    """Wait this many seconds (cut short when the server closes) before answering."""
    disconnect_after: int | None = None
    """Close the connection: streams after this many content chunks, others at once."""
    message: str = "injected fault"
    retry_after: float | None = None
    raw_body: bytes | None = None
    """Answer HTTP 200 (or ``status``) with exactly these bytes: malformed-upstream tests."""


Reply = str | FakeReply | Callable[[RecordedRequest], "str | FakeReply"]


@dataclass
class _Script:
    faults: deque[tuple[Fault, int | None]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault | None:
        with self.lock:
            if not self.faults:
                return None
            fault, times = self.faults[0]
            if times is not None:
                if times <= 1:
                    self.faults.popleft()
                else:
                    self.faults[0] = (fault, times - 1)
            return fault


class FakeOpenAI:
    """The server. ``base_url`` ends in ``/v1``, as OpenAI clients expect."""

    def __init__(
        self,
        reply: Reply = "ok",
        *,
        model: str = "fake-model",
        api_key: str | None = None,
        chunk_words: int = 1,
        chunk_delay: float = 0.0,
    ) -> None:
        self._reply: Reply = reply
        self.model = model
        self.api_key = api_key
        self.chunk_words = max(1, chunk_words)
        self.chunk_delay = chunk_delay
        self._script = _Script()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- control ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def set_reply(self, reply: Reply) -> None:
        self._reply = reply

    def add_fault(self, fault: Fault, *, times: int | None = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (``None``: all of them)."""
        self._script.faults.append((fault, times))

    def fail(
        self, status: int = 500, *, times: int | None = 1, retry_after: float | None = None
    ) -> None:
        self.add_fault(Fault(status=status, retry_after=retry_after), times=times)

    def hang(self, seconds: float, *, times: int | None = 1) -> None:
        self.add_fault(Fault(hang=seconds), times=times)

    def disconnect(self, after_chunks: int = 0, *, times: int | None = 1) -> None:
        self.add_fault(Fault(disconnect_after=after_chunks), times=times)

    def clear_faults(self) -> None:
        with self._script.lock:
            self._script.faults.clear()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the handler ----------------------------------------------------------

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            return self._counter

    def _answer(self, request: RecordedRequest) -> FakeReply:
        reply = self._reply
        if callable(reply):
            reply = reply(request)
        return FakeReply(content=reply) if isinstance(reply, str) else reply


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeOpenAI/1"
    timeout = 10

    @property
    def fake(self) -> FakeOpenAI:
        return cast(FakeOpenAI, self.server.fake)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the requests are recorded instead."""

    def do_GET(self) -> None:
        self._record(b"")
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.fake.model, "object": "model", "owned_by": "fake"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route for GET {self.path}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request, number = self._record(raw)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route for POST {self.path}")
            return
        if not self._authorised():
            self._error(401, "missing or wrong API key", kind="invalid_request_error")
            return
        if not isinstance(request.body.get("messages"), list):
            self._error(400, "body must be JSON with a messages list", kind="invalid_request")
            return
        fault = self.fake._script.next_fault()
        if fault is not None and fault.hang > 0:
            self.fake._stopping.wait(fault.hang)
        if fault is not None and fault.disconnect_after is not None and not request.stream:
            self.close_connection = True
            return
        if fault is not None and fault.raw_body is not None:
            self._raw(fault.status or 200, fault.raw_body)
            return
        if fault is not None and fault.status is not None:
            self._error(fault.status, fault.message, retry_after=fault.retry_after)
            return
        reply = self.fake._answer(request)
        model = request.model or self.fake.model
        completion_id = f"chatcmpl-fake-{number}"
        try:
            if request.stream:
                cut = fault.disconnect_after if fault is not None else None
                self._stream(request, reply, model, completion_id, cut)
            else:
                self._json(200, _completion(request, reply, model, completion_id))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)

    # -- helpers ----------------------------------------------------------------------

    def _record(self, raw: bytes) -> tuple[RecordedRequest, int]:
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=parsed if isinstance(parsed, dict) else {},
        )
        return request, self.fake._record(request)

    def _authorised(self) -> bool:
        key = self.fake.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        message: str,
        *,
        kind: str = "server_error",
        retry_after: float | None = None,
    ) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        if status == 429:
            kind = "rate_limit_error"
        body = {"error": {"message": message, "type": kind, "code": status}}
        try:
            self._json(status, body, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(
        self,
        request: RecordedRequest,
        reply: FakeReply,
        model: str,
        completion_id: str,
        cut_after: int | None,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: Mapping[str, object], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            self._event(_envelope(completion_id, model, "chat.completion.chunk", [choice]))

        chunk({"role": "assistant", "content": ""})
        words = (reply.content or "").split(" ")
        pieces = [
            " ".join(words[i : i + self.fake.chunk_words])
            + (" " if i + self.fake.chunk_words < len(words) else "")
            for i in range(0, len(words), self.fake.chunk_words)
        ]
        for sent, piece in enumerate(p for p in pieces if p):
            if cut_after is not None and sent >= cut_after:
                return
            if self.fake.chunk_delay:
                time.sleep(self.fake.chunk_delay)
            chunk({"content": piece})
        for index, call in enumerate(reply.tool_calls):
            chunk({"tool_calls": [{"index": index, **call}]})
        chunk({}, _finish_reason(reply))
        options = request.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = _envelope(completion_id, model, "chat.completion.chunk", [])
            usage["usage"] = _usage(request, reply)
            self._event(usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: object) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _finish_reason(reply: FakeReply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


def _envelope(
    completion_id: str, model: str, kind: str, choices: list[dict[str, object]]
) -> dict[str, object]:
    return {"id": completion_id, "object": kind, "created": 0, "model": model, "choices": choices}


def _usage(request: RecordedRequest, reply: FakeReply) -> dict[str, int]:
    prompt = sum(len(json.dumps(m.get("content"))) for m in request.messages) // 4 + 1
    completion = len(reply.content or "") // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(
    request: RecordedRequest, reply: FakeReply, model: str, completion_id: str
) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [dict(call) for call in reply.tool_calls]
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(reply)}
    payload = _envelope(completion_id, model, "chat.completion", [choice])
    payload["usage"] = _usage(request, reply)
    return payload


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAI]:
    """A started :class:`FakeOpenAI` answering ``"ok"``; closed after the test."""
    with FakeOpenAI() as server:
        yield server
