"""Lossless conversion between OpenAI chat messages and events."""

from __future__ import annotations

import pytest

from chatstate.errors import ValidationError
from chatstate.model import Event, NewEvent
from chatstate.openai_format import (
    from_openai,
    from_openai_messages,
    to_openai,
    to_openai_messages,
)

MESSAGES: list[dict[str, object]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Internal note", "name": "ops"},
    {"role": "user", "content": "Hi 👋 مرحبا", "name": "ada"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "a"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "result one"},
    {"role": "tool", "tool_call_id": "call_2", "content": "2026-11-25"},
    {"role": "assistant", "content": "Done.", "refusal": None, "annotations": []},
    {"role": "assistant", "content": "", "tool_calls": []},
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_round_trip_is_exact(message: dict[str, object]) -> None:
    assert to_openai(from_openai(message)) == message


def test_kinds() -> None:
    kinds = [e.kind for e in from_openai_messages(MESSAGES)]
    assert kinds == [
        "message",
        "message",
        "message",
        "message",
        "tool_call",
        "tool_result",
        "tool_result",
        "message",
        "message",
    ]


def test_missing_content_becomes_null() -> None:
    assert to_openai(from_openai({"role": "assistant"})) == {"role": "assistant", "content": None}


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "function", "content": "x"},
        {"content": "x"},
        {"role": "user", "content": 5},
        {"role": "tool", "content": "no id"},
        {"role": "user", "content": "x", "tool_call_id": "c"},
        {"role": "user", "content": "x", "tool_calls": [{"id": "c"}]},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 1}}]},
        {"role": "assistant", "tool_calls": "nope"},
        "not a dict",
    ],
)
def test_malformed_messages_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        from_openai(bad)  # type: ignore[arg-type]


def test_payload_events_have_no_message_form() -> None:
    summary = NewEvent(kind="summary", data={"text": "..."})
    with pytest.raises(ValidationError):
        to_openai(summary)
    assert to_openai_messages([summary, NewEvent.message("user", "hi")]) == [
        {"role": "user", "content": "hi"}
    ]


def test_stored_events_convert_too() -> None:
    from datetime import UTC, datetime

    draft = from_openai(MESSAGES[4])
    stored = Event(
        seq=1,
        branch="main",
        created_at=datetime.now(UTC),
        kind=draft.kind,
        role=draft.role,
        content=draft.content,
        tool_calls=draft.tool_calls,
        extra=draft.extra,
    )
    assert to_openai(stored) == MESSAGES[4]


def test_responses_function_call_items_round_trip() -> None:
    """The Agents SDK's ``function_call`` / ``function_call_output`` items are accepted."""
    from chatstate import from_openai, to_openai

    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "order_status",
        "arguments": '{"order_id": "7"}',
        "status": "completed",
    }
    event = from_openai(call)
    assert event.kind == "tool_call" and event.tool_calls[0].id == "call_1"
    assert to_openai(event) == call
    assert to_openai(event, include_extra=False) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "order_status", "arguments": '{"order_id": "7"}'},
            }
        ],
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": "shipped"}
    result = from_openai(output)
    assert result.kind == "tool_result" and result.tool_call_id == "call_1"
    assert to_openai(result) == output
    assert to_openai(result, include_extra=False) == {
        "role": "tool",
        "content": "shipped",
        "tool_call_id": "call_1",
    }
    with pytest.raises(ValidationError):
        from_openai({"type": "function_call", "call_id": "c", "name": "f"})
