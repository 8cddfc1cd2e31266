"""LLMSummariser against a real local OpenAI-compatible server (tests/helpers/fake_openai.py),
and the fake server's own behaviour that later tests (gateway, fact extractor) rely on."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from chatstate.context.extractive import ExtractiveSummariser
from chatstate.context.llm_summary import (
    SYSTEM_PROMPT,
    LLMSummariser,
    SummaryUnavailable,
    render_events,
)
from chatstate.context.summaries import Summariser
from chatstate.errors import BackendUnavailable
from chatstate.model import Event, Role, ToolCall
from helpers.fake_openai import (
    FakeOpenAI,
    FakeReply,
    Fault,
    RecordedRequest,
    fake_openai_fixture,  # noqa: F401 (the fake_openai fixture)
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "sk-test-very-secret"
PREVIOUS = "user: My name is Priya Raman.\nuser: My order number is 48213."


def _events(pairs: list[tuple[Role, str]]) -> list[Event]:
    return [
        Event(seq=i + 1, branch="main", created_at=T0, kind="message", role=role, content=text)
        for i, (role, text) in enumerate(pairs)
    ]


EVENTS = _events(
    [
        ("user", "Where is my parcel?\nIt was due yesterday."),
        ("assistant", "I've issued a refund of $42.50 and I'll email you at pri@example.com."),
    ]
)
GOOD_ANSWER = (
    "user: My name is Priya Raman.\nuser: My order number is 48213.\n"
    "user: parcel was due yesterday.\n"
    "assistant: issued a refund of $42.50; will email pri@example.com."
)


def _summariser(server: FakeOpenAI, **kwargs: object) -> LLMSummariser:
    options: dict[str, object] = {"base_url": server.base_url, "model": "m-1", "api_key": KEY}
    options.update(kwargs)
    return LLMSummariser(**options)  # type: ignore[arg-type]


async def test_happy_path_and_request_body(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply(GOOD_ANSWER + "\n")
    summariser = _summariser(fake_openai)
    assert isinstance(summariser, Summariser)
    summary = await summariser.summarise(previous=PREVIOUS, events=EVENTS, max_tokens=300)
    assert summary == GOOD_ANSWER
    [request] = fake_openai.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.model == "m-1"
    assert request.body["temperature"] == 0.0
    assert request.body["max_tokens"] == 300 + 150 + 16
    system, user = request.messages
    assert system["role"] == "system"
    assert system["content"] == SYSTEM_PROMPT.format(max_tokens=300)
    assert "Carry forward EVERY fact" in str(system["content"])
    content = str(user["content"])
    assert PREVIOUS in content
    assert "user: Where is my parcel? It was due yesterday." in content
    assert "assistant: I've issued a refund of $42.50" in content


async def test_configuration_from_the_environment(fake_openai: FakeOpenAI) -> None:
    env = {
        "CHATSTATE_LLM_BASE_URL": fake_openai.base_url + "/",
        "CHATSTATE_LLM_MODEL": "env-model",
        "CHATSTATE_LLM_API_KEY": "env-key",
        "CHATSTATE_LLM_TIMEOUT": "7.5",
    }
    summariser = LLMSummariser(env=env, max_tokens_param="max_completion_tokens", temperature=None)
    assert summariser.timeout == 7.5
    assert "env-key" not in repr(summariser)
    await summariser.summarise(previous=None, events=EVENTS, max_tokens=100)
    [request] = fake_openai.requests
    assert request.model == "env-model"
    assert request.headers["authorization"] == "Bearer env-key"
    assert "max_tokens" not in request.body
    assert request.body["max_completion_tokens"] == 166
    assert "temperature" not in request.body
    assert "(none yet)" in str(request.messages[1]["content"])


def test_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CHATSTATE_LLM_BASE_URL"):
        LLMSummariser(model="m", env={})
    with pytest.raises(ValueError, match="http"):
        LLMSummariser(base_url="file:///etc/passwd", model="m", env={})
    with pytest.raises(ValueError, match="CHATSTATE_LLM_MODEL"):
        LLMSummariser(base_url="http://127.0.0.1:9/v1", env={})


@pytest.mark.parametrize("status", [500, 429, 401])
async def test_http_errors_raise_a_typed_error_without_the_key(
    fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.add_fault(Fault(status=status, message=f"upstream rejected key {KEY}"))
    with pytest.raises(SummaryUnavailable) as caught:
        await _summariser(fake_openai).summarise(previous=PREVIOUS, events=EVENTS, max_tokens=50)
    error = caught.value
    assert isinstance(error, BackendUnavailable)
    assert error.status == 503
    assert error.reason == "http"
    assert error.http_status == status
    assert f"HTTP {status}" in str(error)
    assert KEY not in str(error)
    assert "***" in str(error)


async def test_timeout_raises_promptly(fake_openai: FakeOpenAI) -> None:
    fake_openai.hang(10)
    started = time.monotonic()
    with pytest.raises(SummaryUnavailable) as caught:
        await _summariser(fake_openai, timeout=0.3).summarise(
            previous=None, events=EVENTS, max_tokens=50
        )
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 2.0


async def test_refused_connection_and_dropped_connection(fake_openai: FakeOpenAI) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = LLMSummariser(base_url=f"http://127.0.0.1:{port}/v1", model="m", env={})
    with pytest.raises(SummaryUnavailable) as caught:
        await closed.summarise(previous=None, events=EVENTS, max_tokens=50)
    assert caught.value.reason == "connection"
    fake_openai.disconnect()
    with pytest.raises(SummaryUnavailable) as caught:
        await _summariser(fake_openai).summarise(previous=None, events=EVENTS, max_tokens=50)
    assert caught.value.reason == "connection"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (FakeReply(content="   "), "empty"),
        (FakeReply(content=None), "empty"),
        (FakeReply(content="user: half a fa", finish_reason="length"), "truncated"),
    ],
)
async def test_unusable_answers_raise(
    fake_openai: FakeOpenAI, reply: FakeReply, reason: str
) -> None:
    fake_openai.set_reply(reply)
    with pytest.raises(SummaryUnavailable) as caught:
        await _summariser(fake_openai).summarise(previous=None, events=EVENTS, max_tokens=50)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "raw", [b"<html>gateway</html>", b'{"choices": []}', b'{"choices": [{"message": "x"}]}']
)
async def test_malformed_answers_raise(fake_openai: FakeOpenAI, raw: bytes) -> None:
    fake_openai.add_fault(Fault(raw_body=raw))
    with pytest.raises(SummaryUnavailable) as caught:
        await _summariser(fake_openai).summarise(previous=None, events=EVENTS, max_tokens=50)
    assert caught.value.reason == "bad_response"


async def test_a_wrong_path_is_an_http_error(fake_openai: FakeOpenAI) -> None:
    summariser = LLMSummariser(base_url=fake_openai.base_url + "/nope", model="m", env={})
    with pytest.raises(SummaryUnavailable, match="HTTP 404"):
        await summariser.summarise(previous=None, events=EVENTS, max_tokens=50)


async def test_fallback_is_used_instead_of_raising(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.fail(500, times=None)
    summariser = _summariser(fake_openai, fallback=ExtractiveSummariser())
    with caplog.at_level(logging.WARNING, logger="chatstate.context.llm_summary"):
        summary = await summariser.summarise(previous=PREVIOUS, events=EVENTS, max_tokens=300)
    assert summary == ExtractiveSummariser().fold(previous=PREVIOUS, events=EVENTS, max_tokens=300)
    assert "48213" in summary
    assert "$42.50" in summary
    assert "using the fallback" in caplog.text
    assert KEY not in caplog.text


async def test_fact_guard_appends_lines_the_model_dropped(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply("user: Priya asked about a late parcel.")
    guarded = await _summariser(fake_openai).summarise(
        previous=PREVIOUS, events=EVENTS, max_tokens=300
    )
    assert guarded.splitlines() == [
        "user: Priya asked about a late parcel.",
        "user: My order number is 48213.",
        "assistant: I've issued a refund of $42.50 and I'll email you at pri@example.com.",
    ]
    unguarded = await _summariser(fake_openai, guard_facts=False).summarise(
        previous=PREVIOUS, events=EVENTS, max_tokens=300
    )
    assert unguarded == "user: Priya asked about a late parcel."


def test_render_events() -> None:
    events = [
        *_events([("user", "  hello\n\nthere  "), ("system", "be nice")]),
        Event(seq=3, branch="main", created_at=T0, kind="tool_call", role="assistant",
              tool_calls=(ToolCall(id="c1", name="track", arguments='{"order": 48213}'),)),
        Event(seq=4, branch="main", created_at=T0, kind="tool_result", role="tool",
              tool_call_id="c1", content="x" * 50),
        Event(seq=5, branch="main", created_at=T0, kind="state", data={"a": 1}),
        Event(seq=6, branch="main", created_at=T0, kind="message", role="assistant", content=""),
    ]  # fmt: skip
    assert render_events(events, max_chars=25).splitlines() == [
        "user: hello there",
        "system: be nice",
        'assistant: track({"order": 48213})',
        "tool: " + "x" * 25 + " [...]",
    ]


# -- the fake server itself ---------------------------------------------------------------


def _post(server: FakeOpenAI, body: dict[str, object], key: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 (the local fake server)
        server.base_url + "/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sse(text: str) -> list[object]:
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_fake_server_streams_sse_and_scripts_replies() -> None:
    def reply(request: RecordedRequest) -> str:
        return f"echo {request.messages[-1]['content']} now"

    with FakeOpenAI(reply, api_key="k", chunk_words=2) as server:
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        status, text = _post(server, {**body, "stream_options": {"include_usage": True}}, "k")
        assert status == 200
        chunks = _sse(text)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]  # type: ignore[index]
        assert deltas[0] == {"role": "assistant", "content": ""}
        assert "".join(d.get("content", "") for d in deltas) == "echo hi now"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
        assert chunks[-1]["usage"]["total_tokens"] > 0  # type: ignore[index]
        assert _post(server, body, "wrong")[0] == 401
        server.disconnect(after_chunks=1)
        status, text = _post(server, body, "k")
        assert "[DONE]" not in text
        assert text.count("data: ") == 2
        assert [r.stream for r in server.requests] == [True, True, True]


def test_fake_server_tool_calls_models_and_persistent_faults() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with FakeOpenAI(FakeReply(content=None, tool_calls=(call,))) as server:
        answer = json.loads(_post(server, {"messages": []})[1])["choices"][0]
        assert answer["finish_reason"] == "tool_calls"
        assert answer["message"]["tool_calls"] == [call]
        server.fail(503, times=None, retry_after=2)
        assert [_post(server, {"messages": []})[0] for _ in range(3)] == [503, 503, 503]
        server.clear_faults()
        assert _post(server, {"messages": []})[0] == 200
        models = server.base_url + "/models"
        with urllib.request.urlopen(models, timeout=5) as response:  # noqa: S310
            assert json.load(response)["data"][0]["id"] == "fake-model"
