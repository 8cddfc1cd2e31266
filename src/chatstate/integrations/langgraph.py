"""``ChatstateSaver``: a LangGraph checkpointer on chatstate's event log.

::

    from chatstate.integrations.langgraph import ChatstateSaver

    saver = ChatstateSaver.from_url("sqlite:///./chatstate.db")   # sync and async use
    graph = builder.compile(checkpointer=saver)
    graph.invoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})

    saver = ChatstateSaver(store)          # async only, on a store you opened
    graph = builder.compile(checkpointer=saver)
    await graph.ainvoke(..., {"configurable": {"thread_id": "t1"}})

Each thread is a chatstate session (tenant ``langgraph`` unless told otherwise) whose
log holds one event per ``put`` and per ``put_writes``; nothing is ever rewritten. A
channel holding a list that extends its previous version (``messages`` under
``add_messages``) is stored as the new items only, so a thread's storage grows with the
new messages, not with the whole state at every step. The saver keeps a decoded view of
each thread it touches and reads only the events newer than that view on every call, so
several processes can share a database. Needs ``pip install 'chatstate[langgraph]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

from chatstate import NewEvent, SessionNotFound, Store
from chatstate.integrations._common import LoopThread, ensure_session, require
from chatstate.integrations._lg_thread import (
    MARK,
    MISSING,
    Blob,
    ThreadView,
    Version,
    pack,
    session_id_of,
)
from chatstate.model import JSONValue

require("langgraph.checkpoint.base", "langgraph")

from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.checkpoint.base import (  # noqa: E402
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol  # noqa: E402

__all__ = ["ChatstateSaver"]

_PAGE = 1000
_DECODED_CAP = 256


class ChatstateSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer whose threads are chatstate sessions."""

    def __init__(
        self,
        store: Store,
        *,
        tenant_id: str = "langgraph",
        serde: SerializerProtocol | None = None,
        _portal: LoopThread | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.store = store
        self.tenant_id = tenant_id
        self._portal = _portal
        self._views: dict[str, ThreadView] = {}
        self._decoded: dict[tuple[str, str, str, Version], list[Any]] = {}
        self._last_list: dict[tuple[str, str, str], tuple[Version, list[Any]]] = {}

    @classmethod
    def from_url(cls, url: str, *, tenant_id: str = "langgraph") -> ChatstateSaver:
        """A saver that opens ``url`` on its own loop thread: usable from sync code
        (``graph.invoke``) and from any event loop. ``close()`` it when done."""
        portal = LoopThread()
        return cls(portal.open(url), tenant_id=tenant_id, _portal=portal)

    def close(self) -> None:
        """Close the store and the loop thread of a saver made by :meth:`from_url`."""
        if self._portal is not None:
            self._portal.close(self.store)
            self._portal = None

    # -- the thread views -----------------------------------------------------------------

    async def _view(self, thread_id: str) -> ThreadView:
        """The thread's view, brought up to date with the events appended since."""
        sid = session_id_of(thread_id)
        view = self._views.get(thread_id) or ThreadView(session_id=sid)
        while True:
            try:
                page = await self.store.read(
                    tenant_id=self.tenant_id, session_id=sid, after_seq=view.head, limit=_PAGE
                )
            except SessionNotFound:
                self._forget(thread_id)
                return ThreadView(session_id=sid)
            for event in page:
                view.fold(event)
            if len(page) < _PAGE:
                break
        self._views[thread_id] = view
        return view

    def _forget(self, thread_id: str) -> None:
        self._views.pop(thread_id, None)
        for key in [k for k in self._decoded if k[0] == thread_id]:
            del self._decoded[key]
        for last in [k for k in self._last_list if k[0] == thread_id]:
            del self._last_list[last]

    async def _append(self, thread_id: str, body: dict[str, JSONValue]) -> None:
        sid = session_id_of(thread_id)
        event = NewEvent(kind="marker", data={MARK: body})
        try:
            await self.store.append(tenant_id=self.tenant_id, session_id=sid, events=[event])
        except SessionNotFound:
            await ensure_session(
                self.store,
                tenant_id=self.tenant_id,
                session_id=sid,
                metadata={"thread_id": thread_id, "source": "langgraph"},
            )
            await self.store.append(tenant_id=self.tenant_id, session_id=sid, events=[event])

    def _value(self, thread_id: str, view: ThreadView, ns: str, ch: str, ver: Version) -> Any:
        blob = view.blobs.get((ns, ch, ver))
        if blob is None or blob.empty:
            return MISSING
        if blob.whole is not None:
            return self.serde.loads_typed(blob.whole)
        return list(self._list(thread_id, view, ns, ch, ver, blob))

    def _list(
        self, thread_id: str, view: ThreadView, ns: str, ch: str, ver: Version, blob: Blob
    ) -> list[Any]:
        """A list channel's value, rebuilt from the chain of versions it extends."""
        key = (thread_id, ns, ch, ver)
        if (hit := self._decoded.get(key)) is not None:
            return hit
        chain: list[tuple[Version, Blob]] = [(ver, blob)]
        while (base := chain[-1][1].base) is not None:
            if (thread_id, ns, ch, base) in self._decoded:
                break
            chain.append((base, view.blobs[(ns, ch, base)]))
        base = chain[-1][1].base
        value: list[Any] = list(self._decoded[(thread_id, ns, ch, base)]) if base else []
        for version, link in reversed(chain):
            value = value + [self.serde.loads_typed(item) for item in link.items]
            if len(self._decoded) >= _DECODED_CAP:
                self._decoded.clear()
            self._decoded[(thread_id, ns, ch, version)] = value
        return value

    def _tuple(self, thread_id: str, view: ThreadView, ns: str, cid: str) -> CheckpointTuple:
        record = view.checkpoints[ns][cid]
        checkpoint = cast(Checkpoint, self.serde.loads_typed(record.checkpoint))
        values = {}
        for ch, ver in checkpoint["channel_versions"].items():
            value = self._value(thread_id, view, ns, ch, ver)
            if value is not MISSING:
                values[ch] = value
        stored = view.writes.get((ns, cid), {})
        order = sorted(stored, key=lambda k: (k[0], k[1]))
        pending = [
            (task, channel, self.serde.loads_typed(value))
            for task, channel, value, _ in (stored[k] for k in order)
        ]
        parent = record.parent
        return CheckpointTuple(
            config=_config(thread_id, ns, cid),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=cast(CheckpointMetadata, self.serde.loads_typed(record.metadata)),
            parent_config=_config(thread_id, ns, parent) if parent else None,
            pending_writes=pending,
        )

    # -- the async API ----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._portal is not None:
            return await self._portal.run_async(self._get_tuple(config))
        return await self._get_tuple(config)

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        view = await self._view(thread_id)
        cid = get_checkpoint_id(config) or view.latest(ns)
        if cid is None or cid not in view.checkpoints.get(ns, {}):
            return None
        return self._tuple(thread_id, view, ns, cid)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if self._portal is not None:
            found = await self._portal.run_async(self._list_all(config, filter, before, limit))
        else:
            found = await self._list_all(config, filter, before, limit)
        for item in found:
            yield item

    async def _threads(self) -> list[str]:
        threads: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.store.list_sessions(
                tenant_id=self.tenant_id, limit=500, cursor=cursor
            )
            threads += [str(s.metadata.get("thread_id", s.id)) for s in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return threads

    async def _list_all(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> list[CheckpointTuple]:
        conf = config["configurable"] if config else {}
        threads = [str(conf["thread_id"])] if conf.get("thread_id") else await self._threads()
        want_ns = conf.get("checkpoint_ns")
        want_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        out: list[CheckpointTuple] = []
        for thread_id in threads:
            view = await self._view(thread_id)
            for ns, records in view.checkpoints.items():
                if want_ns is not None and ns != want_ns:
                    continue
                for cid in sorted(records, reverse=True):
                    if limit is not None and len(out) >= limit:
                        return out
                    if (want_id and cid != want_id) or (before_id and cid >= before_id):
                        continue
                    if filter:
                        meta = self.serde.loads_typed(records[cid].metadata)
                        if not all(meta.get(k) == v for k, v in filter.items()):
                            continue
                    out.append(self._tuple(thread_id, view, ns, cid))
        return out

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self._portal is not None:
            return await self._portal.run_async(
                self._put(config, checkpoint, metadata, new_versions)
            )
        return await self._put(config, checkpoint, metadata, new_versions)

    async def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        header: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = header.pop("channel_values", {})
        blobs: dict[str, JSONValue] = {}
        for ch, ver in new_versions.items():
            blobs[ch] = self._blob(thread_id, ns, ch, ver, values, ch in values)
        body: dict[str, JSONValue] = {
            "op": "put",
            "ns": ns,
            "id": checkpoint["id"],
            "parent": conf.get("checkpoint_id"),
            "cp": pack(self.serde.dumps_typed(header)),
            "md": pack(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
            "blobs": blobs,
        }
        await self._append(thread_id, body)
        return _config(thread_id, ns, checkpoint["id"])

    def _blob(
        self, thread_id: str, ns: str, ch: str, ver: Version, values: dict[str, Any], has: bool
    ) -> JSONValue:
        """How channel ``ch`` at version ``ver`` is stored: new items of a list when it
        extends the last list this saver stored for the channel, else the whole value."""
        if not has:
            return {"v": ver, "empty": True}
        value = values[ch]
        if not isinstance(value, list):
            return {"v": ver, "whole": pack(self.serde.dumps_typed(value))}
        last = self._last_list.get((thread_id, ns, ch))
        self._last_list[(thread_id, ns, ch)] = (ver, list(value))
        if last is not None and last[0] != ver and value[: len(last[1])] == last[1]:
            fresh = value[len(last[1]) :]
            base: Version | None = last[0]
        else:
            fresh, base = value, None
        items: list[JSONValue] = [pack(self.serde.dumps_typed(v)) for v in fresh]
        return {"v": ver, "base": base, "items": items}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self._portal is not None:
            await self._portal.run_async(self._put_writes(config, writes, task_id, task_path))
        else:
            await self._put_writes(config, writes, task_id, task_path)

    async def _put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, path: str
    ) -> None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        view = await self._view(thread_id)
        stored = view.writes.get((ns, cid), {})
        rows: list[JSONValue] = []
        for idx, (channel, value) in enumerate(writes):
            index = WRITES_IDX_MAP.get(channel, idx)
            if index >= 0 and (task_id, index) in stored:
                continue  # a retried task: the first write stands
            rows.append([index, channel, pack(self.serde.dumps_typed(value))])
        if rows:
            body: dict[str, JSONValue] = {
                "op": "writes",
                "ns": ns,
                "cid": cid,
                "task": task_id,
                "path": path,
                "w": rows,
            }
            await self._append(thread_id, body)

    async def adelete_thread(self, thread_id: str) -> None:
        if self._portal is not None:
            await self._portal.run_async(self._delete(thread_id))
        else:
            await self._delete(thread_id)

    async def _delete(self, thread_id: str) -> None:
        self._forget(thread_id)
        with contextlib.suppress(SessionNotFound):
            await self.store.delete_session(
                tenant_id=self.tenant_id, session_id=session_id_of(thread_id)
            )

    # -- the sync API: only for a saver made by from_url ----------------------------------

    def _sync(self) -> LoopThread:
        if self._portal is None:
            raise RuntimeError(
                "a ChatstateSaver on a store you opened is async only: use ainvoke/astream, "
                "or ChatstateSaver.from_url(url) for sync graphs"
            )
        return self._portal

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync().run(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._sync().run(self._list_all(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync().run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync().run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync().run(self._delete(thread_id))


def _config(thread_id: str, ns: str, cid: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}
