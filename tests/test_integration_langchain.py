"""``ChatstateChatMessageHistory`` under ``RunnableWithMessageHistory`` with a fake chat
model, async on a store and sync through ``from_url``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("langchain_core", reason="pip install '.[langchain]'")

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from chatstate import NewEvent, open_store
from chatstate.integrations.langchain import ChatstateChatMessageHistory

# langchain-core 1.x deprecates RunnableWithMessageHistory in favour of LangGraph
# persistence (ChatstateSaver); it still works and is what existing chains use.
deprecated = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")


def _chain(seen: list[list[BaseMessage]], replies: list[str]) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def record(value: PromptValue) -> PromptValue:
        seen.append(value.to_messages())
        return value

    return prompt | RunnableLambda(record) | FakeListChatModel(responses=replies)


@deprecated
async def test_async_chain_over_turns(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'lc.db'}")
    try:
        seen: list[list[BaseMessage]] = []
        chain = RunnableWithMessageHistory(
            _chain(seen, ["Order 7 shipped.", "You asked about order 7."]),
            lambda sid: ChatstateChatMessageHistory(sid, store, tenant_id="acme"),
            input_messages_key="question",
            history_messages_key="history",
        )
        config = {"configurable": {"session_id": "lc-1"}}
        first = await chain.ainvoke({"question": "Where is order 7?"}, config)
        assert first.content == "Order 7 shipped."
        second = await chain.ainvoke({"question": "What did I ask?"}, config)
        assert second.content == "You asked about order 7."
        # The second call's prompt carries the first turn from the store.
        assert [m.content for m in seen[-1]] == [
            "Be brief.",
            "Where is order 7?",
            "Order 7 shipped.",
            "What did I ask?",
        ]
        # Stored as ordinary chat events, readable by the rest of chatstate.
        events = await store.read(tenant_id="acme", session_id="lc-1", limit=10)
        assert [(e.role, e.content) for e in events] == [
            ("user", "Where is order 7?"),
            ("assistant", "Order 7 shipped."),
            ("user", "What did I ask?"),
            ("assistant", "You asked about order 7."),
        ]
    finally:
        await store.close()


async def test_messages_round_trip_and_clear(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'rt.db'}")
    try:
        history = ChatstateChatMessageHistory("rt", store)
        assert await history.aget_messages() == []
        messages: list[BaseMessage] = [
            SystemMessage("rules", id="s1"),
            HumanMessage("weather in Oslo?", id="h1", name="ana"),
            AIMessage(
                "",
                id="a1",
                tool_calls=[{"id": "call_1", "name": "weather", "args": {"city": "Oslo"}}],
                response_metadata={"model_name": "fake"},
            ),
            ToolMessage("4 degrees", tool_call_id="call_1", id="t1"),
            AIMessage("It is 4 degrees.", id="a2"),
        ]
        await history.aadd_messages(messages)
        assert await history.aget_messages() == messages
        events = await store.read(tenant_id="default", session_id="rt", limit=10)
        assert [e.kind for e in events] == [
            "message",
            "message",
            "tool_call",
            "tool_result",
            "message",
        ]
        # A message another writer appended (the gateway) reads in its OpenAI form.
        await store.append(
            tenant_id="default", session_id="rt", events=[NewEvent.message("user", "thanks")]
        )
        assert (await history.aget_messages())[-1] == HumanMessage("thanks")
        await history.aclear()
        assert await history.aget_messages() == []
        assert len(await store.read(tenant_id="default", session_id="rt", limit=10)) == 7
        with pytest.raises(RuntimeError, match="from_url"):
            _ = history.messages
    finally:
        await store.close()


@deprecated
def test_sync_chain_with_from_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    opened: list[ChatstateChatMessageHistory] = []

    def get_history(session_id: str) -> ChatstateChatMessageHistory:
        opened.append(ChatstateChatMessageHistory.from_url(session_id, url))
        return opened[-1]

    seen: list[list[BaseMessage]] = []
    chain = RunnableWithMessageHistory(
        _chain(seen, ["one", "two"]),
        get_history,
        input_messages_key="question",
        history_messages_key="history",
    )
    try:
        config = {"configurable": {"session_id": "sync-1"}}
        assert chain.invoke({"question": "first"}, config).content == "one"
        assert chain.invoke({"question": "second"}, config).content == "two"
        assert [m.content for m in seen[-1]][1:] == ["first", "one", "second"]
    finally:
        for history in opened:
            history.close()
