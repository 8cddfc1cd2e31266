"""Opening a gateway turn: the turn policy, the open-turn record and retries.

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
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chatstate.context.engine import ContextEngine
from chatstate.context.text import event_text
from chatstate.errors import (
    AlreadyExists,
    IdempotencyMismatch,
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
from chatstate.server.stream_writer import Record
from chatstate.server.streams import ResponseInfo, ResponseLog
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id, new_session_id, utcnow

__all__ = ["TurnOpener", "TurnRequest", "response_of"]


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
    instructions: str | None = None
    """Leading system/developer messages the key may not store: they instruct this turn."""


_CHAT = frozenset({"message", "tool_call", "tool_result"})


def response_of(event: Event) -> str | None:
    """The response id the gateway stamped on a stored input or answer, if any."""
    meta = event.data.get("chatstate")
    rid = meta.get("response_id") if isinstance(meta, dict) else None
    return rid if isinstance(rid, str) else None


class TurnOpener(ABC):
    """The request path of :class:`chatstate.server.gateway.Gateway` up to the start of
    its producer: which turn this request is, and whether it may open one. The gateway
    supplies the two abstract methods: starting a producer and storing an answer."""

    store: Store
    engine: ContextEngine
    responses: ResponseLog
    config: ServerConfig
    _tasks: dict[str, asyncio.Task[None]]

    @abstractmethod
    async def _launch(self, info: ResponseInfo, turn: TurnRequest) -> None: ...

    @abstractmethod
    async def store_answer(
        self, info: ResponseInfo, records: Sequence[Record] | None = None
    ) -> int | None: ...

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
        drafts, instructions = _instructions(principal, drafts)
        turn = replace(turn, instructions=instructions)
        born, head, recent = await self._head(
            tenant, session_id, turn.branch, create=(principal, drafts)
        )
        last = recent[-1] if recent else None
        rid = _response_id(tenant, session_id, born, turn.idempotency_key)
        pending = response_of(last) if last and last.role != "assistant" else None
        if pending == rid and last is not None:
            return await self._retry(tenant, rid, last, drafts, turn, session_id)
        if pending is not None and last is not None:
            await self._settle(tenant, pending, last)
            born, head, recent = await self._head(tenant, session_id, turn.branch)
            last = recent[-1] if recent else None
        new = drafts if head == 0 else _newest(drafts)
        check_write(principal, new, last)
        stamp: dict[str, JSONValue] = {"chatstate": {"response_id": rid}}
        new[-1] = replace(new[-1], data={**new[-1].data, **stamp})
        for attempt in range(3):
            try:
                try:
                    # Tool pairing is checked on the page read above: a broken pair
                    # would fail every later turn.
                    appended = await self.engine.append(
                        session_id,
                        new,
                        tenant_id=tenant,
                        branch=turn.branch,
                        expected_seq=head,
                        idempotency_key=f"{rid}.in",
                        recent=recent,
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
    ) -> tuple[datetime, int, list[Event]]:
        """The session's creation time (its incarnation), the branch head and the
        branch's newest chat events, oldest first (see :meth:`_newest_chat`).
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
    ) -> tuple[int, list[Event]]:
        """The branch head and the chat events of the first page that holds one, oldest
        first, paging back from the head past any number of state and summary events
        (the first page almost always holds it). The newest of them is the open-turn
        record (see the module docstring); all of them are the window in which the new
        input's tool calls and results must pair
        (:func:`~chatstate.context.pairing.check_tool_pairing`)."""
        head, before, limit = 0, None, 32
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
                return head, []
            head = head or page[0].seq
            chat = [e for e in reversed(page) if e.kind in _CHAT]
            if chat:
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


def _response_id(tenant: str, session_id: str, born: datetime, key: str | None) -> str:
    """Random without a key; with one, derived from the key and the session's
    incarnation (its creation time), so a session id created again after the first one
    expired or was erased never finds the old session's responses."""
    if key is None:
        return "resp_" + secrets.token_hex(16)
    seed = f"{tenant}\0{session_id}\0{born.isoformat()}\0{key}"
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return "resp_" + digest[:32]


def _instructions(
    principal: Principal, drafts: list[NewEvent]
) -> tuple[list[NewEvent], str | None]:
    """A request's leading system/developer messages are its instructions. A key with the
    ``admin`` scope stores them as any message (on a new session: the session's system
    prompt). Without it they are not stored and instruct this turn only, as an agent that
    sends its instructions with every request expects; the rest is the turn's input."""
    lead = 0
    while lead < len(drafts) and drafts[lead].kind == "message":
        if drafts[lead].role not in ("system", "developer"):
            break
        lead += 1
    if lead == 0 or principal.can("admin"):
        return drafts, None
    if lead == len(drafts):
        raise ValidationError("a turn needs a message after its system/developer messages")
    return drafts[lead:], "\n\n".join(event_text(d) for d in drafts[:lead])


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
