"""The LLM extractor against a local OpenAI-compatible server: schema, validation, one
retry, and the fallback to the rules."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from chatstate.model import Event, Role
from chatstate.state import ExtractionUnavailable, LLMExtractor, RuleExtractor
from chatstate.state.fold import apply_all
from chatstate.state.llm_schema import InvalidAnswer, parse_answer
from helpers.fake_openai import (
    FakeOpenAI,
    RecordedRequest,
    fake_openai_fixture,  # noqa: F401 (the fixture)
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def events(*turns: tuple[Role, str], first: int = 1) -> list[Event]:
    return [
        Event(seq=i, branch="main", created_at=T0, kind="message", role=role, content=text)
        for i, (role, text) in enumerate(turns, start=first)
    ]


CHAT = events(
    ("user", "My account is 48123. Can you refund the double charge?"),
    ("assistant", "I've issued a refund of $59.99 to your card."),
    ("user", "Sorry, the account is 48213."),
)
GOOD = {
    "facts": [
        {"key": "account_number", "value": "48123", "seq": 1, "correction": False,
         "confidence": 0.9},
        {"key": "Account Number", "value": "48213", "seq": 3, "correction": True,
         "confidence": 0.95},
    ],
    "commitments": [
        {"text": "Refund of $59.99 issued", "topic": "refund", "status": "fulfilled", "seq": 2}
    ],
    "commitment_updates": [],
    "goal": "get the double charge refunded",
    "open_questions": [],
    "resolved_questions": [],
}  # fmt: skip


def extractor(server: FakeOpenAI, **kwargs: object) -> LLMExtractor:
    return LLMExtractor(base_url=server.base_url, model="m", api_key="sk-test", **kwargs)  # type: ignore[arg-type]


async def test_answer_becomes_changes(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply(json.dumps(GOOD))
    changes = await extractor(fake_openai).extract(events=CHAT, state={})
    doc = apply_all({}, changes)
    facts = doc["facts"]
    assert isinstance(facts, dict)
    fact = facts["account_number"]
    assert isinstance(fact, dict) and fact["value"] == "48213" and fact["source"] == "llm"
    assert fact["history"][0]["value"] == "48123"  # type: ignore[index,call-overload]
    assert doc["goal"] == "get the double charge refunded"
    request = fake_openai.requests[-1]
    schema = request.body["response_format"]
    assert isinstance(schema, dict) and schema["type"] == "json_schema"
    prompt = str(request.messages[-1]["content"])
    assert "[3] user: Sorry, the account is 48213." in prompt
    assert request.headers["authorization"] == "Bearer sk-test"


async def test_invalid_answer_is_retried_once_with_the_problem(fake_openai: FakeOpenAI) -> None:
    answers = iter(["not json at all", json.dumps(GOOD)])

    def reply(_request: RecordedRequest) -> str:
        return next(answers)

    fake_openai.set_reply(reply)
    changes = await extractor(fake_openai).extract(events=CHAT, state={})
    assert any(c.key == "account_number" and c.op == "correct_fact" for c in changes)
    retry = fake_openai.requests[-1].messages
    assert retry[-2] == {"role": "assistant", "content": "not json at all"}
    assert "not valid" in str(retry[-1]["content"])


async def test_two_failures_fall_back_to_the_rules(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.fail(status=500, times=2)
    with caplog.at_level(logging.WARNING):
        changes = await extractor(fake_openai).extract(events=CHAT, state={})
    assert changes == RuleExtractor().changes(CHAT, {})
    assert "using the fallback" in caplog.text and "sk-test" not in caplog.text
    assert len(fake_openai.requests) == 2


async def test_without_fallback_the_failure_is_typed(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply(json.dumps({**GOOD, "facts": [{"key": "k", "value": "v", "seq": 99,
                                                          "correction": False,
                                                          "confidence": 1}]}))  # fmt: skip
    with pytest.raises(ExtractionUnavailable) as info:
        await extractor(fake_openai, fallback=None).extract(events=CHAT, state={})
    assert info.value.reason == "invalid" and info.value.status == 503


async def test_timeout_falls_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.hang(2.0, times=2)
    changes = await extractor(fake_openai, timeout=0.2).extract(events=CHAT, state={})
    assert changes == RuleExtractor().changes(CHAT, {})


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("[]", "JSON object"),
        ('{"facts": [{"key": "", "value": "v", "seq": 1}]}', "non-empty"),
        ('{"facts": {"key": "k"}}', "list of objects"),
        ('{"commitment_updates": [{"id": "c404", "status": "revoked", "seq": 1}]}', "unknown"),
        ('{"commitments": [{"text": "t", "topic": null, "status": "maybe", "seq": 2}]}', "status"),
        ('{"resolved_questions": [1]}', "question ids"),
    ],
)
def test_validation(answer: str, problem: str) -> None:
    with pytest.raises(InvalidAnswer, match=problem):
        parse_answer(answer, events=CHAT, state={})


def test_fenced_answers_are_accepted() -> None:
    changes = parse_answer("```json\n" + json.dumps(GOOD) + "\n```", events=CHAT, state={})
    assert len(changes) == 4


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="base_url"):
        LLMExtractor(base_url="ftp://x", model="m", env={})
    with pytest.raises(ValueError, match="model"):
        LLMExtractor(base_url="http://127.0.0.1:1/v1", env={})
    configured = LLMExtractor(
        env={"CHATSTATE_LLM_BASE_URL": "http://127.0.0.1:1/v1", "CHATSTATE_LLM_MODEL": "m"}
    )
    assert configured.endpoint.endswith("/v1/chat/completions") and "m" in repr(configured)
