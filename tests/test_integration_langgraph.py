"""``ChatstateSaver`` passes LangGraph's own checkpointer conformance suite, on SQLite
and PostgreSQL, runs real graphs sync and async, and stores growth, not whole states."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("langgraph.checkpoint.conformance", reason="pip install '.[langgraph]'")

from langchain_core.messages import AIMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import START, MessagesState, StateGraph

from chatstate import Store, open_store
from chatstate.integrations.langgraph import ChatstateSaver
from chatstate.testing.plugin import MakeStore


async def test_conformance(make_store: MakeStore) -> None:
    """LangGraph's suite, on every backend (memory, SQLite, PostgreSQL, Redis, tier)."""
    store = await make_store()

    @checkpointer_test(name="ChatstateSaver")
    async def saver() -> AsyncIterator[ChatstateSaver]:
        yield ChatstateSaver(store)

    report = await validate(saver)
    report.print_report()
    assert report.passed_all_base()


def _graph(saver: ChatstateSaver) -> object:
    def reply(state: MessagesState) -> dict[str, list[AIMessage]]:
        return {"messages": [AIMessage(content=f"reply {len(state['messages'])}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


async def _stored_bytes(store: Store, tenant: str, session: str) -> int:
    events = await store.read(tenant_id=tenant, session_id=session, limit=10_000)
    return sum(len(repr(e.data)) for e in events)


async def test_async_graph_keeps_history_and_stores_only_growth(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        saver = ChatstateSaver(store)
        graph = _graph(saver)
        config = {"configurable": {"thread_id": "thread-1"}}
        sizes = []
        for turn in range(40):
            out = await graph.ainvoke({"messages": [("user", f"message {turn}")]}, config)  # type: ignore[attr-defined]
            sizes.append(await _stored_bytes(store, "langgraph", "thread-1"))
        assert len(out["messages"]) == 80
        assert out["messages"][-1].content == "reply 79"
        # Each turn adds about the same bytes: the new messages, not the whole history.
        early, late = sizes[5] - sizes[4], sizes[39] - sizes[38]
        assert late < early * 1.5, (early, late)
        # A second saver (another process) reads the same thread from the log alone.
        state = await _graph(ChatstateSaver(store)).aget_state(config)  # type: ignore[attr-defined]
        assert [m.content for m in state.values["messages"]][-2:] == ["message 39", "reply 79"]
    finally:
        await store.close()


def test_sync_graph_with_from_url(tmp_path: Path) -> None:
    saver = ChatstateSaver.from_url(f"sqlite:///{tmp_path / 's.db'}")
    try:
        graph = _graph(saver)
        config = {"configurable": {"thread_id": "sync thread/1"}}  # not a valid id: hashed
        graph.invoke({"messages": [("user", "hi")]}, config)  # type: ignore[attr-defined]
        out = graph.invoke({"messages": [("user", "again")]}, config)  # type: ignore[attr-defined]
        assert [m.content for m in out["messages"]] == ["hi", "reply 1", "again", "reply 3"]
        assert len(list(saver.list(config))) >= 4
        saver.delete_thread("sync thread/1")
        assert saver.get_tuple(config) is None
    finally:
        saver.close()


async def test_store_saver_refuses_sync_calls(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with pytest.raises(RuntimeError, match="from_url"):
            ChatstateSaver(store).get_tuple({"configurable": {"thread_id": "t"}})
    finally:
        await store.close()
