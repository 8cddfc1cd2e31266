"""``ChatstateSession``: an OpenAI Agents SDK ``Session`` kept in a chatstate store.

::

    from agents import Agent, Runner
    from chatstate import open_store
    from chatstate.integrations.agents import ChatstateSession

    store = await open_store("sqlite:///./chatstate.db")
    session = ChatstateSession("support-42", store)
    result = await Runner.run(agent, "Where is my order?", session=session)

Each item the Runner stores is one event of the session's log: messages as ``message``
events, ``function_call`` items as ``tool_call`` events and ``function_call_output`` items
as ``tool_result`` events (so the context engine, the gateway, ``chatstate health`` and
``sessions export`` read them like any chat), and every other item (reasoning, hosted
tool calls) verbatim in a ``marker`` event. ``get_items`` returns the items exactly as
they were added.

Nothing is rewritten: ``pop_item`` appends a retraction marker naming the seq it takes
back, and ``clear_session`` a marker that ends the history before it; ``get_items`` skips
what they cover. ``get_items(limit=n)`` reads the log backwards and stops after ``n``
items. Needs ``pip install 'chatstate[agents]'`` only for the SDK itself: this module
imports nothing from it at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from chatstate import (
    Event,
    NewEvent,
    SeqConflict,
    SessionNotFound,
    Store,
    ValidationError,
    from_openai,
    to_openai,
)
from chatstate.integrations._common import append_all, ensure_session
from chatstate.model import JSONValue

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["ChatstateSession"]

MARK = "agents"
"""The key under ``data`` of the markers this session writes."""
_PAGE = 200


def _item_event(item: Mapping[str, object]) -> NewEvent:
    """The event that stores ``item``; a marker with the item verbatim when the chat form
    would not give it back unchanged."""
    if "role" in item or item.get("type") in ("function_call", "function_call_output"):
        try:
            event = from_openai(item)
        except ValidationError:
            pass
        else:
            if to_openai(event) == item:
                return event
    return NewEvent(kind="marker", data={MARK: {"item": cast(JSONValue, dict(item))}})


def _event_item(event: Event) -> dict[str, JSONValue] | None:
    """The item an event holds, or ``None`` for an event that is not one."""
    if event.kind == "marker":
        mark = event.data.get(MARK)
        if isinstance(mark, dict) and isinstance(mark.get("item"), dict):
            return cast(dict[str, JSONValue], mark["item"])
        return None
    if event.kind in ("message", "tool_call", "tool_result"):
        return to_openai(event)
    return None


def _op(event: Event) -> tuple[str, int] | None:
    """``("retract", seq)`` or ``("clear", 0)`` for this adapter's control markers."""
    if event.kind != "marker":
        return None
    mark = event.data.get(MARK)
    if not isinstance(mark, dict):
        return None
    if mark.get("op") == "clear":
        return ("clear", 0)
    target = mark.get("retract")
    if mark.get("op") == "retract" and isinstance(target, int):
        return ("retract", target)
    return None


class ChatstateSession:
    """An Agents SDK session: ``session_id`` is a chatstate session of ``tenant_id``.

    The session is created on the first ``add_items``; ``metadata`` goes on it then.
    """

    def __init__(
        self,
        session_id: str,
        store: Store,
        *,
        tenant_id: str = "default",
        branch: str = "main",
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> None:
        self.session_id = session_id
        self.store = store
        self.tenant_id = tenant_id
        self.branch = branch
        self.session_settings = None
        self._metadata = dict(metadata or {"source": "openai-agents"})
        self._created = False

    async def _live(self, limit: int | None) -> list[tuple[int, dict[str, JSONValue]]]:
        """The newest ``limit`` (all for ``None``) live items with their seqs, oldest first."""
        out: list[tuple[int, dict[str, JSONValue]]] = []
        if limit is not None and limit <= 0:
            return out
        retracted: set[int] = set()
        before: int | None = None
        while True:
            try:
                page = await self.store.read(
                    tenant_id=self.tenant_id,
                    session_id=self.session_id,
                    branch=self.branch,
                    before_seq=before,
                    limit=_PAGE,
                    order="desc",
                )
            except SessionNotFound:
                return out
            for event in page:
                op = _op(event)
                if op is not None:
                    if op[0] == "clear":
                        out.reverse()
                        return out
                    retracted.add(op[1])
                    continue
                if event.seq in retracted:
                    continue
                item = _event_item(event)
                if item is None:
                    continue
                out.append((event.seq, item))
                if limit is not None and len(out) >= limit:
                    out.reverse()
                    return out
            if len(page) < _PAGE:
                out.reverse()
                return out
            before = page[-1].seq

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first; with ``limit``, only the newest ``limit`` items."""
        if limit is None and self.session_settings is not None:
            limit = getattr(self.session_settings, "limit", None)
        return [cast("TResponseInputItem", item) for _, item in await self._live(limit)]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items, in order, in as few appends as the store allows."""
        if not items:
            return
        events = [_item_event(cast(Mapping[str, object], item)) for item in items]
        if not self._created:
            await ensure_session(
                self.store,
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                metadata=self._metadata,
            )
            self._created = True
        await append_all(
            self.store,
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            events=events,
            branch=self.branch,
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Take back the newest item: a retraction marker is appended, nothing deleted."""
        while True:
            try:
                head = await self.store.read_last(
                    tenant_id=self.tenant_id, session_id=self.session_id, branch=self.branch, n=1
                )
            except SessionNotFound:
                return None
            live = await self._live(1)
            if not live:
                return None
            seq, item = live[0]
            marker = NewEvent(kind="marker", data={MARK: {"op": "retract", "retract": seq}})
            try:
                await self.store.append(
                    tenant_id=self.tenant_id,
                    session_id=self.session_id,
                    branch=self.branch,
                    events=[marker],
                    expected_seq=head[-1].seq if head else 0,
                )
            except SeqConflict:
                continue  # someone appended meanwhile: the newest item may have changed
            return cast("TResponseInputItem", item)

    async def clear_session(self) -> None:
        """End the history here: later ``get_items`` see nothing before this point.

        The events stay in the log; ``Store.delete_session`` erases them for good.
        """
        try:
            await self.store.append(
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                branch=self.branch,
                events=[NewEvent(kind="marker", data={MARK: {"op": "clear"}})],
            )
        except SessionNotFound:
            return
