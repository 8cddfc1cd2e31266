"""The stateful chat gateway: one turn = store the newest message, build, call, stream, store.

**Policy for two turns at once on one branch: reject.** A turn is open from the moment
its input is stored until its answer is stored. A second request that finds a turn open
answers 409 ``turn_in_progress``; two requests that race past that check both append
with the head they read as ``expected_seq``, so exactly one wins and the other gets 409.
The log therefore always reads input, answer, input, answer.

**The open-turn record is the branch's newest chat event** (``message``, ``tool_call``,
``tool_result``): an input stamped with a response id and no answer after it means that
turn is open. We chose this over a separate record on the branch because it is changed
by the very append that opens the turn (conditional on the head we read) or closes it
(the answer's idempotent append), so it can never disagree with the log, and no
backend needs a second write in the same transaction. It is found by paging back from
the head past state and summary events, however many were written in between (the
first page of 16 almost always holds it), so fact writes cannot hide an open turn.

**Retries.** A request with the ``Idempotency-Key`` of the open (or a finished) turn is
not a second turn: with the same newest message it attaches to that turn's response
stream and replays it; with another message it is a 422 ``idempotency_mismatch``,
whether the turn is open or closed. If the turn's response log was never created (a
store failure after the input was stored, or an identical request racing this one),
the retry creates it and starts the turn: whoever creates the log produces, everyone
else attaches. A turn that was never started and that later turns overtook answers 410
(send the message again with a new key). Response ids of keyed turns are derived from
(tenant, session, the session's creation time, key), so a session id created again
after its first incarnation expired or was erased never meets the old responses.

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
it exists), the branch's newest events, the input's append, the response log's creation, the
context build (window and state document), one append per flush, the answer's append.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import httpx

from chatstate.context.engine import ContextEngine
from chatstate.errors import (
    AlreadyExists,
    ChatstateError,
    IdempotencyMismatch,
    NotFound,
    SeqConflict,
    SessionNotFound,
    ValidationError,
)
from chatstate.model import Event, JSONValue, NewEvent
from chatstate.openai_format import from_openai
from chatstate.server.auth import Principal, check_write
from chatstate.server.config import ServerConfig
from chatstate.server.errors import ResponseExpired, ResponseNotFound, TurnInProgress
from chatstate.server.inputs import check_messages, limits_of
from chatstate.server.middleware import Metrics
from chatstate.server.sse import collect
from chatstate.server.stream_writer import ChunkWriter, FlushFailed, Record
from chatstate.server.streams import ResponseInfo, ResponseLog, Status, Stopped
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id, new_session_id, utcnow

__all__ = ["AfterTurn", "Gateway", "TurnDone", "TurnRequest", "response_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnRequest:
    model: str
    messages: Sequence[Mapping[str, object]]
    upstream_body: Mapping[str, JSONValue]
    session_id: str | None = None
    branch: str = "main"
    idempotency_key: str | None = None
    budget: int | None = None
    stream: bool = True
    """The client streams: the first chunk is flushed at once (else with the next)."""


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
_CHAT = frozenset({"message", "tool_call", "tool_result"})


def response_of(event: Event) -> str | None:
    """The response id the gateway stamped on a stored input or answer, if any."""
    meta = event.data.get("chatstate")
    rid = meta.get("response_id") if isinstance(meta, dict) else None
    return rid if isinstance(rid, str) else None


class Gateway:
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

    # -- starting a turn ----------------------------------------------------------------

    async def start(self, principal: Principal, turn: TurnRequest) -> ResponseInfo:
        """Store the turn's input and start its producer; or attach to the same turn."""
        tenant = principal.tenant
        session_id = check_id(turn.session_id or new_session_id(), "session_id")
        check_id(turn.branch, "branch")
        if turn.idempotency_key is not None:
            check_id(turn.idempotency_key, "Idempotency-Key", max_len=255)
        if not turn.messages:
            raise ValidationError("messages must not be empty")
        drafts = [from_openai(m, index=i) for i, m in enumerate(turn.messages)]
        check_messages(drafts, limits_of(self.store))  # before a token is counted
        born, head, last = await self._head(
            tenant, session_id, turn.branch, create=(principal, drafts)
        )
        rid = _response_id(tenant, session_id, born, turn.idempotency_key)
        pending = response_of(last) if last and last.role != "assistant" else None
        if pending == rid and last is not None:
            return await self._retry(tenant, rid, last, drafts, turn, session_id)
        if pending is not None and last is not None:
            await self._settle(tenant, pending, last)
            born, head, last = await self._head(tenant, session_id, turn.branch)
        new = drafts if head == 0 else _newest(drafts)
        check_write(principal, new, last)
        stamp: dict[str, JSONValue] = {"chatstate": {"response_id": rid}}
        new[-1] = replace(new[-1], data={**new[-1].data, **stamp})
        for attempt in range(3):
            try:
                try:
                    appended = await self.engine.append(
                        session_id,
                        new,
                        tenant_id=tenant,
                        branch=turn.branch,
                        expected_seq=head,
                        idempotency_key=f"{rid}.in",
                    )
                except IdempotencyMismatch:
                    if len(new) == len(drafts):
                        raise
                    # A retry of a session's first turn, which stored every message of
                    # its body: the same body under the same key replays it.
                    appended = await self.engine.append(
                        session_id,
                        [*drafts[: -len(new)], *new],
                        tenant_id=tenant,
                        branch=turn.branch,
                        expected_seq=head,
                        idempotency_key=f"{rid}.in",
                    )
                break
            except SeqConflict as exc:
                # State and summary events land in the background; only a chat event
                # after the head we read means another turn got in first (or this very
                # turn, sent twice at once: then this request attaches to it).
                newer = await self.store.read(
                    tenant_id=tenant,
                    session_id=session_id,
                    branch=turn.branch,
                    after_seq=head,
                    limit=64,
                )
                chat = [e for e in newer if e.kind in _CHAT]
                if chat and response_of(chat[-1]) == rid:
                    return await self._retry(tenant, rid, chat[-1], drafts, turn, session_id)
                if attempt == 2 or not newer or chat:
                    raise TurnInProgress("another write reached this session first; retry") from exc
                head = newer[-1].seq
        if appended.replayed:
            return await self._reattach(tenant, rid, turn, session_id, appended.last_seq)
        return await self._open(tenant, rid, session_id, turn)

    async def _open(
        self, tenant: str, rid: str, session_id: str, turn: TurnRequest
    ) -> ResponseInfo:
        """Create the turn's response log and start its producer; whoever creates the
        log produces, a twin request that finds it created attaches to it."""
        try:
            info = await self.responses.create(
                response_id=rid,
                tenant=tenant,
                session_id=session_id,
                branch=turn.branch,
                model=turn.model,
            )
        except AlreadyExists:
            return await self.responses.info(tenant, rid)
        await self._launch(info, turn)
        return info

    async def _retry(
        self,
        tenant: str,
        rid: str,
        stored: Event,
        drafts: list[NewEvent],
        turn: TurnRequest,
        session_id: str,
    ) -> ResponseInfo:
        """A request with the key of the open turn: the same message attaches to it (and
        starts it when its log was never created: a failure after the input was stored,
        or a twin request that has not created it yet); another message is a 422."""
        if not _same_input(stored, drafts[-1]):
            raise IdempotencyMismatch(
                "this Idempotency-Key belongs to a turn with another message; "
                "use a new key for a new message"
            )
        try:
            return await self.responses.info(tenant, rid)
        except ResponseNotFound:
            return await self._open(tenant, rid, session_id, turn)

    async def _head(
        self,
        tenant: str,
        session_id: str,
        branch: str,
        *,
        create: tuple[Principal, list[NewEvent]] | None = None,
    ) -> tuple[datetime, int, Event | None]:
        """The session's creation time (its incarnation), the branch head and the
        branch's newest chat event: the open-turn record (see the module docstring).
        With ``create``, a session that does not exist is created for that principal's
        messages, once they pass the write check, so a refused request leaves no
        session (an expired one is a 410)."""
        try:
            session = await self.store.get_session(tenant_id=tenant, session_id=session_id)
        except SessionNotFound as exc:
            if exc.status == 410 or create is None:
                raise
            check_write(*create, None)  # a refused request leaves no session
            try:
                session = await self.store.create_session(tenant_id=tenant, session_id=session_id)
            except AlreadyExists:
                session = await self.store.get_session(tenant_id=tenant, session_id=session_id)
        head, chat = await self._newest_chat(tenant, session_id, branch)
        return session.created_at, head, chat

    async def _newest_chat(
        self, tenant: str, session_id: str, branch: str
    ) -> tuple[int, Event | None]:
        """The branch head and its newest chat event, paging back from the head past any
        number of state and summary events (the first page almost always holds it)."""
        head, before, limit = 0, None, 16
        while True:
            page = await self.store.read(
                tenant_id=tenant,
                session_id=session_id,
                branch=branch,
                before_seq=before,
                limit=limit,
                order="desc",
            )
            if not page:
                return head, None
            head = head or page[0].seq
            chat = next((e for e in page if e.kind in _CHAT), None)
            if chat is not None:
                return head, chat
            before, limit = page[-1].seq, 256

    async def _settle(self, tenant: str, rid: str, event: Event) -> None:
        """Close out the turn that ``event`` opened, or raise :class:`TurnInProgress`."""
        try:
            info = await self.responses.info(tenant, rid)
        except ResponseExpired:
            return
        except ResponseNotFound:
            young = utcnow() - event.created_at < timedelta(seconds=2 * self.config.lease_seconds)
            if young:  # stored a moment ago; its log is about to be created
                raise TurnInProgress("a turn of this session is starting") from None
            return
        head = await self.responses.head(rid)
        if head is None or not head.terminal:
            if rid in self._tasks or not await self.responses.lease_expired(rid, info):
                raise TurnInProgress(
                    f"response {rid} of this session is still streaming; wait for it, "
                    "cancel it, or resume it"
                )
            await self.responses.finish_once(
                rid, "incomplete", {"message": "the process producing this response stopped"}
            )
        await self.store_answer(info)

    async def _reattach(
        self, tenant: str, rid: str, turn: TurnRequest, session_id: str, input_seq: int
    ) -> ResponseInfo:
        """The turn's input was stored before (its append replayed): attach to its log;
        start it if the log was never created and nothing followed the input; a 410
        when its log expired, or when the turn was never answered and the session moved
        on (the one thing to do: send the message again with a new key)."""
        try:
            return await self.responses.info(tenant, rid)
        except ResponseNotFound:
            pass
        after = input_seq
        while page := await self.store.read(
            tenant_id=tenant,
            session_id=session_id,
            branch=turn.branch,
            after_seq=after,
            limit=256,
        ):
            chat = next((e for e in page if e.kind in _CHAT), None)
            if chat is not None:
                if response_of(chat) == rid:
                    raise ResponseExpired(f"response {rid!r} has expired") from None
                raise ResponseExpired(
                    f"response {rid!r} was never started and later turns followed it; "
                    "send the message again with a new Idempotency-Key"
                )
            after = page[-1].seq
        return await self._open(tenant, rid, session_id, turn)

    async def _launch(self, info: ResponseInfo, turn: TurnRequest) -> None:
        self.responses.local.add(info.id)
        try:
            built = await self.engine.build(
                info.session_id,
                tenant_id=info.tenant,
                model=turn.model,
                budget=turn.budget if turn.budget is not None else self.config.context_budget,
                branch=info.branch,
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
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                parsed = json.loads(data)
                if isinstance(parsed, dict):
                    yield parsed, _text_size(parsed)

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


def _response_id(tenant: str, session_id: str, born: datetime, key: str | None) -> str:
    """Random without a key; with one, derived from the key and the session's
    incarnation (its creation time), so a session id created again after the first one
    expired or was erased never finds the old session's responses."""
    if key is None:
        return "resp_" + secrets.token_hex(16)
    seed = f"{tenant}\0{session_id}\0{born.isoformat()}\0{key}"
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return "resp_" + digest[:32]


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


def _newest(drafts: list[NewEvent]) -> list[NewEvent]:
    """On an existing session, only the newest message (with the tool results before it,
    when it is one of several results of one call) is new."""
    out = [drafts[-1]]
    if drafts[-1].kind == "tool_result":
        for draft in reversed(drafts[:-1]):
            if draft.kind != "tool_result":
                break
            out.insert(0, draft)
    return out


def _same_input(stored: Event, draft: NewEvent) -> bool:
    """Whether a stored turn input is this request's newest message (the gateway's stamp
    and the token count aside): a reused Idempotency-Key must carry the same message."""
    data = {k: v for k, v in stored.data.items() if k != "chatstate"}
    mine = replace(stored.draft(), data=data, token_count=None)
    return mine == replace(draft, data=dict(draft.data), token_count=None)
