"""``ChatstateChatMessageHistory``: a LangChain chat history kept in a chatstate session.

::

    from langchain_core.runnables.history import RunnableWithMessageHistory
    from chatstate.integrations.langchain import ChatstateChatMessageHistory

    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: ChatstateChatMessageHistory.from_url(session_id, "sqlite:///./chat.db"),
        input_messages_key="question",
        history_messages_key="history",
    )

Each message is one chat event of the session (``user``, ``assistant`` with its tool
calls, ``system``, ``tool``), so the context engine, the gateway, ``chatstate health`` and
``sessions export`` see an ordinary conversation; the LangChain form of the message
(ids, ``additional_kwargs``, ``response_metadata``) rides along in the event's
``data["langchain"]`` and comes back unchanged. Messages written by others (the gateway,
``chatstate import``) are read in their OpenAI form. ``clear()`` appends a marker that
ends the history; the log keeps what came before (``Store.delete_session`` erases it).

Built on a store you opened, the history is async only (``ainvoke``, ``aget_messages``);
:meth:`ChatstateChatMessageHistory.from_url` opens its own store on a private loop
thread and serves sync calls too. Needs ``pip install 'chatstate[langchain]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from chatstate import Event, NewEvent, SessionNotFound, Store, from_openai, to_openai
from chatstate.integrations._common import LoopThread, append_all, ensure_session, require
from chatstate.model import JSONValue

require("langchain_core.chat_history", "langchain")

from langchain_core.chat_history import BaseChatMessageHistory  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    BaseMessage,
    convert_to_messages,
    convert_to_openai_messages,
    message_to_dict,
    messages_from_dict,
)

__all__ = ["ChatstateChatMessageHistory"]

MARK = "langchain"
_PAGE = 1000


def _event(message: BaseMessage) -> NewEvent:
    chat = cast(dict[str, object], convert_to_openai_messages(message))
    event = from_openai(chat)
    data: dict[str, JSONValue] = {MARK: cast(JSONValue, message_to_dict(message))}
    return NewEvent(
        kind=event.kind,
        role=event.role,
        content=event.content,
        tool_calls=event.tool_calls,
        tool_call_id=event.tool_call_id,
        name=event.name,
        extra=event.extra,
        data=data,
    )


def _message(event: Event) -> BaseMessage:
    stored = event.data.get(MARK)
    if isinstance(stored, dict):
        return messages_from_dict([cast(dict[str, object], stored)])[0]
    return convert_to_messages([to_openai(event, include_extra=False)])[0]


def _cleared(event: Event) -> bool:
    mark = event.data.get(MARK)
    return event.kind == "marker" and isinstance(mark, dict) and mark.get("op") == "clear"


class ChatstateChatMessageHistory(BaseChatMessageHistory):
    """The chat history of chatstate session ``session_id`` in ``tenant_id``."""

    def __init__(
        self,
        session_id: str,
        store: Store,
        *,
        tenant_id: str = "default",
        branch: str = "main",
        _portal: LoopThread | None = None,
    ) -> None:
        self.session_id = session_id
        self.store = store
        self.tenant_id = tenant_id
        self.branch = branch
        self._portal = _portal

    @classmethod
    def from_url(
        cls, session_id: str, url: str, *, tenant_id: str = "default"
    ) -> ChatstateChatMessageHistory:
        """A history on its own store and loop thread: sync and async calls both work.
        ``close()`` it when done."""
        portal = LoopThread()
        return cls(session_id, portal.open(url), tenant_id=tenant_id, _portal=portal)

    def close(self) -> None:
        if self._portal is not None:
            self._portal.close(self.store)
            self._portal = None

    def _sync(self) -> LoopThread:
        if self._portal is None:
            raise RuntimeError(
                "a ChatstateChatMessageHistory on a store you opened is async only: use "
                "ainvoke / aget_messages, or ChatstateChatMessageHistory.from_url for sync use"
            )
        return self._portal

    async def _read(self) -> list[BaseMessage]:
        events: list[Event] = []
        after = 0
        while True:
            try:
                page = await self.store.read(
                    tenant_id=self.tenant_id,
                    session_id=self.session_id,
                    branch=self.branch,
                    after_seq=after,
                    limit=_PAGE,
                )
            except SessionNotFound:
                return []
            for event in page:
                if _cleared(event):
                    events.clear()
                elif event.kind in ("message", "tool_call", "tool_result"):
                    events.append(event)
            if len(page) < _PAGE:
                return [_message(e) for e in events]
            after = page[-1].seq

    async def _add(self, messages: Sequence[BaseMessage]) -> None:
        if not messages:
            return
        await ensure_session(self.store, tenant_id=self.tenant_id, session_id=self.session_id)
        await append_all(
            self.store,
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            events=[_event(m) for m in messages],
            branch=self.branch,
        )

    async def _clear(self) -> None:
        marker = NewEvent(kind="marker", data={MARK: {"op": "clear"}})
        try:
            await self.store.append(
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                branch=self.branch,
                events=[marker],
            )
        except SessionNotFound:
            return

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return self._sync().run(self._read())

    async def aget_messages(self) -> list[BaseMessage]:
        if self._portal is not None:
            return await self._portal.run_async(self._read())
        return await self._read()

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._sync().run(self._add(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if self._portal is not None:
            await self._portal.run_async(self._add(messages))
        else:
            await self._add(messages)

    def clear(self) -> None:
        self._sync().run(self._clear())

    async def aclear(self) -> None:
        if self._portal is not None:
            await self._portal.run_async(self._clear())
        else:
            await self._clear()
