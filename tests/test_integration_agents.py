"""``ChatstateSession`` under the OpenAI Agents SDK: the behaviour the SDK's own session
tests check (tests/memory/test_session.py), every item type the Runner stores, pop as a
retraction, and ``Runner.run(..., session=)`` over turns with tool calls (fake model)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("agents", reason="pip install 'chatstate[agents]'")

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Summary

from chatstate import Store, open_store
from chatstate.integrations.agents import ChatstateSession

set_tracing_disabled(True)  # the SDK would otherwise try to export traces


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'agents.db'}")
    yield opened
    await opened.close()


def text_message(text: str, n: int = 1) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{n}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class FakeModel(Model):
    """Returns the scripted outputs in order and records every input it was sent."""

    def __init__(self, turns: list[list[Any]]) -> None:
        self.turns = list(turns)
        self.inputs: list[list[dict[str, Any]]] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kw: Any
    ) -> Any:
        self.inputs.append(json.loads(json.dumps(input if isinstance(input, list) else [input])))
        return ModelResponse(output=self.turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kw: Any) -> Any:
        raise NotImplementedError


@function_tool
def order_status(order_id: str) -> str:
    """The shipping status of an order."""
    return f"order {order_id}: shipped on 2 May"


async def test_add_get_clear_and_limits(store: Store) -> None:
    from agents.memory import Session

    session = ChatstateSession("direct", store, tenant_id="acme")
    assert isinstance(session, Session)
    assert await session.get_items() == []
    items: list[Any] = [
        {"role": "user", "content": f"Message {i}"}
        if i % 2
        else {"role": "assistant", "content": f"Response {i}"}
        for i in range(1, 7)
    ]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=4) == items[-4:]
    assert await session.get_items(limit=10) == items
    assert await session.get_items(limit=0) == []
    other = ChatstateSession("direct", store, tenant_id="other-tenant")
    assert await other.get_items() == []  # tenants are separate
    await session.clear_session()
    assert await session.get_items() == []
    # The log keeps what was cleared: the clear is one more event, not a delete.
    events = await store.read(tenant_id="acme", session_id="direct", limit=100)
    assert len(events) == 7 and events[-1].kind == "marker"
    await session.add_items([{"role": "user", "content": "after"}])
    assert await session.get_items() == [{"role": "user", "content": "after"}]


async def test_pop_item_is_a_retraction(store: Store) -> None:
    session = ChatstateSession("pop", store)
    assert await session.pop_item() is None
    items: list[Any] = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "How are you?"},
    ]
    await session.add_items(items)
    assert await session.pop_item() == items[2]
    assert await session.get_items() == items[:2]
    assert await session.get_items(limit=1) == items[1:2]
    assert await session.pop_item() == items[1]
    assert await session.pop_item() == items[0]
    assert await session.pop_item() is None
    assert await session.get_items() == []
    events = await store.read(tenant_id="default", session_id="pop", limit=100)
    # Three items and three retractions, each naming the seq it takes back; nothing deleted.
    assert [e.kind for e in events] == ["message"] * 3 + ["marker"] * 3
    assert [e.data["agents"]["retract"] for e in events[3:]] == [3, 2, 1]  # type: ignore[index]
    other = ChatstateSession("pop-2", store)
    await other.add_items(items[:1])
    assert await other.get_items() == items[:1]


async def test_every_item_type_round_trips(store: Store) -> None:
    items: list[Any] = [
        {"role": "user", "content": "What is the status of order 7?"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "look it up"}],
            "encrypted_content": "gAAAA",
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "order_status",
            "arguments": '{"order_id": "7"}',
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "shipped"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "a part"}],
        },
        text_message("It shipped.").model_dump(exclude_unset=True),
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]
    session = ChatstateSession("kinds", store)
    await session.add_items(items)
    assert await session.get_items() == items
    events = await store.read(tenant_id="default", session_id="kinds", limit=100)
    kinds = [e.kind for e in events]
    assert kinds == [
        "message",
        "message",
        "marker",
        "tool_call",
        "tool_result",
        "tool_result",
        "message",
        "marker",
    ]
    # Function calls are ordinary tool events to the rest of chatstate.
    assert events[3].tool_calls[0].name == "order_status"
    assert events[4].tool_call_id == "call_1" and events[4].content == "shipped"


async def test_runner_over_turns_with_tool_calls(store: Store) -> None:
    call = ResponseFunctionToolCall(
        id="fc_1",
        type="function_call",
        call_id="call_1",
        name="order_status",
        arguments='{"order_id": "7"}',
        status="completed",
    )
    reasoning = ResponseReasoningItem(
        id="rs_1", type="reasoning", summary=[Summary(type="summary_text", text="check")]
    )
    model = FakeModel(
        [
            [reasoning, call],
            [text_message("Order 7 shipped on 2 May.", 2)],
            [text_message("You asked about order 7.", 3)],
        ]
    )
    agent = Agent(name="support", instructions="Be brief.", model=model, tools=[order_status])
    session = ChatstateSession("run", store)
    first = await Runner.run(agent, "Where is order 7?", session=session)
    assert first.final_output == "Order 7 shipped on 2 May."
    second = await Runner.run(agent, "What did I ask about?", session=session)
    assert second.final_output == "You asked about order 7."
    # The second turn's model input is the whole stored history plus the new message.
    sent = model.inputs[-1]
    types = [i.get("type", "message") for i in sent]
    assert types == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert sent[3]["output"] == "order 7: shipped on 2 May"
    history = await session.get_items()
    assert len(history) == 7
    # A fresh session object on the same store reads the same history.
    assert await ChatstateSession("run", store).get_items() == history


def test_missing_sdk_names_the_extra() -> None:
    from chatstate.integrations._common import require

    with pytest.raises(ImportError, match=r"pip install 'chatstate\[agents\]'"):
        require("no_such_module_xyz", "agents")
