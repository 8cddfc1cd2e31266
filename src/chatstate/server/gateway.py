"""The stateful chat gateway: one turn = store the newest message, build, call, stream, store.

The turn policy, the open-turn record and retries: :mod:`chatstate.server.turns`.

The producer is a task of its own: a client that disconnects does not stop it, an
explicit cancel does. Its :class:`ChunkWriter` flushes the upstream chunks to the
response log by time or size (one ``append`` per flush, not per chunk) before anyone can
read them, and when it ends (done, error, cancelled, or shut down) it stores the
assistant message, marked ``incomplete``/``cancelled`` in ``data.chatstate`` when cut
short. A producer whose process dies leaves its lease to expire; whoever looks next (a
resuming client, or the next turn on the session) writes ``incomplete`` and stores the
partial answer. The answer is appended with an idempotency key derived from the response
id and its content derived from the log alone (the producer adds it up from the records
it flushed, others read the log), so whoever stores it, it is stored once.

Store calls of one turn on its request path: the session (its incarnation, and whether
it exists), the branch's newest events, the input's append, the response log's creation,
the context build (window and state document), one append per flush, the answer's append.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from chatstate.context.engine import ContextEngine
from chatstate.errors import ChatstateError, IdempotencyMismatch, NotFound
from chatstate.model import JSONValue
from chatstate.server.config import ServerConfig
from chatstate.server.middleware import Metrics
from chatstate.server.sse import collect
from chatstate.server.stream_writer import ChunkWriter, FlushFailed, Record
from chatstate.server.streams import ResponseInfo, ResponseLog, Status, Stopped
from chatstate.server.turns import TurnOpener, TurnRequest, response_of
from chatstate.store.protocol import Store

__all__ = ["AfterTurn", "Gateway", "TurnDone", "TurnRequest", "response_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnDone:
    """What the after-turn hook gets: which turn ended, how, and what it stored."""

    tenant: str
    session_id: str
    branch: str
    response_id: str
    status: str
    answer_seq: int | None


AfterTurn = Callable[[TurnDone], Awaitable[None]]


class Gateway(TurnOpener):
    def __init__(
        self,
        *,
        store: Store,
        engine: ContextEngine,
        responses: ResponseLog,
        config: ServerConfig,
        metrics: Metrics,
        http: httpx.AsyncClient,
    ) -> None:
        self.store = store
        self.engine = engine
        self.responses = responses
        self.config = config
        self.metrics = metrics
        self.http = http
        self.after_turn: AfterTurn | None = None
        """HOOK: state extraction and health checks (chatstate.state / chatstate.health)
        plug in here. Called off the request path once a turn's answer is stored."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, tuple[str, str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        responses.on_reaped = self._reaped

    async def _launch(self, info: ResponseInfo, turn: TurnRequest) -> None:
        self.responses.local.add(info.id)
        try:
            built = await self.engine.build(
                info.session_id,
                tenant_id=info.tenant,
                model=turn.model,
                budget=turn.budget if turn.budget is not None else self.config.context_budget,
                branch=info.branch,
                system=turn.instructions,
            )
        except BaseException as exc:
            self.responses.local.discard(info.id)
            message = f"could not build the context: {type(exc).__name__}"
            await self.responses.finish_once(info.id, "error", {"message": message})
            raise
        body: dict[str, JSONValue] = {**turn.upstream_body, "model": turn.model}
        body["messages"] = list(built.messages)
        body["stream"] = True
        writer = self.responses.writer(info.id, eager=turn.stream)  # before any reader
        task = asyncio.create_task(self._produce(info, writer, body), name=f"produce-{info.id}")
        self._tasks[info.id] = task
        self._owners[info.id] = (info.tenant, info.session_id)
        self.metrics.count("gateway_turns")

    # -- producing ----------------------------------------------------------------------

    async def _produce(
        self, info: ResponseInfo, writer: ChunkWriter, body: Mapping[str, JSONValue]
    ) -> None:
        status: Status | None = "done"
        detail: dict[str, JSONValue] = {}
        renewer = asyncio.create_task(self._renew(info.id, writer))
        try:
            async for chunk, size in self._upstream(body):
                if "error" in chunk:
                    status, detail = "error", {"message": "the upstream reported an error"}
                    break
                chunk["id"] = info.id
                writer.add(chunk, size)
        except Stopped:
            status = None  # a cancel or a reaper already wrote the terminal
        except asyncio.CancelledError:
            status = "incomplete" if self._stopping else "cancelled"
            detail = {"message": "server shutting down" if self._stopping else "cancelled"}
        except _Cut as exc:
            status, detail = "incomplete", {"message": str(exc), "code": "upstream_cut"}
        except _UpstreamFailed as exc:
            status, detail = "error", {"message": str(exc), "code": "upstream_error"}
        except FlushFailed:
            status, detail = "error", {"message": "could not store the stream"}
        except (httpx.HTTPError, ChatstateError, ValueError) as exc:
            status, detail = "error", {"message": f"stream failed: {type(exc).__name__}"}
        finally:
            renewer.cancel()
        await asyncio.shield(self._conclude(info, writer, status, detail))

    async def _conclude(
        self,
        info: ResponseInfo,
        writer: ChunkWriter,
        status: Status | None,
        detail: Mapping[str, JSONValue],
    ) -> None:
        try:
            written = await writer.close(status, detail)
            if written:
                await self.store_answer(info, writer.records)
            else:
                if status is not None and not writer.stopped:  # a flush failed
                    await self.responses.finish_once(info.id, status, detail)
                await self.store_answer(info)
        except ChatstateError:
            log.warning("could not conclude response %s", info.id, exc_info=True)
        finally:
            writer.publish_terminal()
            self.responses.release(info.id)
            self.responses.local.discard(info.id)
            self._tasks.pop(info.id, None)
            self._owners.pop(info.id, None)

    async def _upstream(
        self, body: Mapping[str, JSONValue]
    ) -> AsyncIterator[tuple[dict[str, JSONValue], int]]:
        """The upstream's chunks, each with the size of the answer text it carries."""
        base = self.config.upstream_base_url
        if not base:
            raise _UpstreamFailed("no upstream is configured (--upstream-base-url)")
        headers = {"Accept": "text/event-stream"}
        if self.config.upstream_api_key:
            headers["Authorization"] = f"Bearer {self.config.upstream_api_key}"
        url = base.rstrip("/") + "/chat/completions"
        async with self.http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _UpstreamFailed(f"the upstream answered HTTP {response.status_code}")
            finished = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                parsed = json.loads(data)
                if isinstance(parsed, dict):
                    finished = finished or _finished(parsed)
                    yield parsed, _text_size(parsed)
            if not finished:
                # The connection ended with neither [DONE] nor a finish_reason: what came
                # is a part of the answer, kept and marked, never stored as the whole.
                raise _Cut("the upstream's stream ended before its answer did")

    async def _renew(self, rid: str, writer: ChunkWriter) -> None:
        """Flushes carry the lease; only a producer whose upstream has been silent for a
        third of the lease writes one (to the hidden session's state document)."""
        period = self.config.lease_seconds / 3
        version = 0
        while True:
            await asyncio.sleep(period)
            if time.time() - writer.last_write < period:
                continue
            try:
                version = await self.responses.renew(rid, version)
            except ChatstateError:
                log.warning("could not renew the lease of response %s", rid, exc_info=True)

    async def store_answer(
        self, info: ResponseInfo, records: Sequence[Record] | None = None
    ) -> int | None:
        """Append the answer the log adds up to (idempotent); its seq, or None.
        ``records``: the log as the producer wrote it (else it is read)."""
        if records is None:
            records = await self.responses.read_all(info.id)
        answer = collect(records)
        if answer.status == "streaming":
            return None
        self.metrics.count(f"responses_{answer.status}")
        event = answer.event(info.id)
        seq: int | None = None
        if event is not None:
            try:
                result = await self.engine.append(
                    info.session_id,
                    [event],
                    tenant_id=info.tenant,
                    branch=info.branch,
                    idempotency_key=f"{info.id}.out",
                )
                seq = result.last_seq
            except (NotFound, IdempotencyMismatch):
                log.info("answer of response %s not stored: its session is gone", info.id)
                return None
            if result.replayed:
                return seq
        self._after(
            TurnDone(info.tenant, info.session_id, info.branch, info.id, answer.status, seq)
        )
        return seq

    async def _reaped(self, rid: str) -> None:
        """A reader found this response's producer dead: store its partial answer."""
        try:
            await self.store_answer(await self.responses.load(rid))
        except ChatstateError:
            log.warning("could not store the partial answer of %s", rid, exc_info=True)

    def _after(self, done: TurnDone) -> None:
        hook = self.after_turn
        if hook is None:
            return

        async def run() -> None:
            try:
                await hook(done)
            except Exception:
                log.warning("after-turn hook failed for %s", done.response_id, exc_info=True)

        task = asyncio.create_task(run(), name=f"after-turn-{done.response_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- control ------------------------------------------------------------------------

    async def cancel(self, info: ResponseInfo) -> None:
        task = self._tasks.get(info.id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            return
        await self.responses.finish_once(info.id, "cancelled", {"message": "cancelled"})
        await self.store_answer(info)

    async def forget(self, tenant: str, session_id: str) -> None:
        """Stop this process's producers of a deleted session and drop what the context
        engine keeps in memory about it (erasure reaches every tier)."""
        await self.engine.forget(tenant, session_id)
        doomed = [
            task
            for rid, task in self._tasks.items()
            if self._owners.get(rid) == (tenant, session_id)
        ]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.wait(doomed, timeout=5)

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Let running turns finish for ``grace`` seconds, then stop them as incomplete."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._stopping = True
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=10)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)


class _UpstreamFailed(Exception):
    pass


class _Cut(Exception):
    """The upstream's stream ended with neither ``[DONE]`` nor a ``finish_reason``."""


def _finished(chunk: Mapping[str, JSONValue]) -> bool:
    """Whether a chunk says the answer is over (a choice with a ``finish_reason``): an
    upstream that closes right after it, without ``[DONE]``, still gave a whole answer."""
    choices = chunk.get("choices")
    return any(
        isinstance(c, dict) and c.get("finish_reason") is not None
        for c in (choices if isinstance(choices, list) else [])
    )


def _text_size(chunk: Mapping[str, JSONValue]) -> int:
    """Characters of answer text (content, tool-call arguments) in one chunk: what the
    writer's size trigger counts, so 4 KB means 4 KB of answer, not of JSON envelopes."""
    size = 0
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        content = delta.get("content")
        size += len(content) if isinstance(content, str) else 0
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            args = function.get("arguments") if isinstance(function, dict) else None
            size += len(args) if isinstance(args, str) else 0
    return size
