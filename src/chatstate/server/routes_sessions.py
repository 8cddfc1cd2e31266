"""Sessions, events, branches, context, state and export: the store over HTTP.

Every route looks objects up in the caller's tenant only, so another tenant's id is
simply not found (404). Errors leave through :mod:`chatstate.server.errors`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from chatstate.errors import (
    BranchNotFound,
    ChatstateError,
    NotFound,
    SeqConflict,
    StateVersionConflict,
    TooLarge,
    ValidationError,
)
from chatstate.model import DEFAULT_BRANCH, JSONValue
from chatstate.openai_format import to_openai
from chatstate.server.auth import check_write
from chatstate.server.deps import (
    IdempotencyKey,
    IfMatch,
    Reader,
    StateBranch,
    Svc,
    Writer,
    etag,
)
from chatstate.server.errors import PreconditionFailed
from chatstate.server.inputs import check_events, check_message, limits_of
from chatstate.server.views import (
    AppendBody,
    ContextBody,
    CreateSessionBody,
    ForkBody,
    StateBody,
    TTLBody,
    branch_json,
    event_json,
    session_json,
    state_json,
    to_new_event,
    unreadable_line,
)
from chatstate.state import StateKeeper
from chatstate.store.erase import erase
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id

__all__ = ["fold_fork_state", "router"]

router = APIRouter(prefix="/v1", tags=["sessions"])
log = logging.getLogger(__name__)

SessionId = Annotated[str, Path(max_length=128)]
BranchQ = Annotated[str, Query(max_length=128)]
_CHAT_KINDS = ("message", "tool_call", "tool_result")
_PAIRING_WINDOW = 32
"""Newest events read to check tool call/result pairing on append."""


async def fold_fork_state(store: Store, tenant: str, session_id: str, branch: str) -> None:
    """Write a new branch's state document, folded from its log (its parent's up to the
    fork point), so the fork's context pins the state as it stood there at once. No
    extraction here: the next turn's sync on the branch does that. Best effort: on failure
    that sync builds the document instead."""
    try:
        await StateKeeper(store, branch=branch).apply(session_id, [], tenant_id=tenant)
    except ChatstateError:
        log.warning("folding the state of new branch %r failed", branch, exc_info=True)


async def _head(store: Store, tenant: str, session_id: str, branch: str) -> int:
    for info in await store.list_branches(tenant_id=tenant, session_id=session_id):
        if info.name == branch:
            return info.head_seq
    raise BranchNotFound(f"branch {branch!r} not found")


@router.post("/sessions", status_code=201)
async def create_session(body: CreateSessionBody, svc: Svc, who: Writer) -> JSONResponse:
    session = await svc.store.create_session(
        tenant_id=who.tenant,
        session_id=body.id,
        user_id=body.user_id,
        metadata=body.metadata,
        ttl_seconds=body.ttl_seconds,
    )
    return JSONResponse(session_json(session), status_code=201)


@router.get("/sessions")
async def list_sessions(
    svc: Svc,
    who: Reader,
    user_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> JSONResponse:
    page = await svc.store.list_sessions(
        tenant_id=who.tenant, user_id=user_id, limit=limit, cursor=cursor
    )
    return JSONResponse(
        {"data": [session_json(s) for s in page.items], "next_cursor": page.next_cursor}
    )


@router.get("/sessions/{session_id}")
async def get_session(session_id: SessionId, svc: Svc, who: Reader) -> JSONResponse:
    session = await svc.store.get_session(tenant_id=who.tenant, session_id=session_id)
    branches = await svc.store.list_branches(tenant_id=who.tenant, session_id=session_id)
    head = next((b.head_seq for b in branches if b.name == session.default_branch), 0)
    body = {**session_json(session), "branches": [branch_json(b) for b in branches]}
    return JSONResponse(body, headers={"ETag": etag(head)})


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: SessionId, svc: Svc, who: Writer) -> Response:
    """Hard-delete the session, its branches, state, idempotency records and response logs
    (:func:`chatstate.store.erase.erase`: the logs first, so a retry finishes a failed one)."""
    try:
        await erase(svc.store, who.tenant, session_id=session_id)
    finally:
        await svc.gateway.forget(who.tenant, session_id)
    return Response(status_code=204)


@router.delete("/users/{user_id}", status_code=200)
async def delete_user(
    user_id: Annotated[str, Path(max_length=128)], svc: Svc, who: Writer
) -> JSONResponse:
    """Erase every session of one user in the caller's tenant (expired ones not purged yet
    included), with their response logs."""
    check_id(user_id, "user_id")
    ids = await _session_ids(svc.store, who.tenant, user_id)
    deleted = await erase(svc.store, who.tenant, user_id=user_id)
    for session_id in ids:
        await svc.gateway.forget(who.tenant, session_id)
    if deleted == 0:
        raise NotFound(f"no sessions of user {user_id!r}")
    return JSONResponse({"deleted": deleted})


async def _session_ids(store: Store, tenant: str, user_id: str) -> list[str]:
    """Every session id of a user, expired ones included (to drop them from caches)."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_sessions(
            tenant_id=tenant, user_id=user_id, limit=500, cursor=cursor, include_expired=True
        )
        ids += [s.id for s in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


@router.put("/sessions/{session_id}/ttl")
async def set_ttl(session_id: SessionId, body: TTLBody, svc: Svc, who: Writer) -> JSONResponse:
    session = await svc.store.set_ttl(
        tenant_id=who.tenant, session_id=session_id, ttl_seconds=body.ttl_seconds
    )
    return JSONResponse(session_json(session))


@router.post("/sessions/{session_id}/events", status_code=201)
async def append_events(
    session_id: SessionId,
    body: AppendBody,
    svc: Svc,
    who: Writer,
    key: IdempotencyKey,
    if_match: IfMatch,
    branch: BranchQ = "main",
) -> JSONResponse:
    """Append atomically. ``If-Match: "<head>"`` answers 412 on another head;
    ``expected_seq`` in the body answers 409. ``Idempotency-Key`` replays the first result."""
    if len(body.events) > svc.config.max_events_per_append:
        raise TooLarge(f"at most {svc.config.max_events_per_append} events per append")
    if if_match is not None and body.expected_seq not in (None, if_match):
        raise ValidationError("If-Match and expected_seq disagree")
    events = [to_new_event(raw, i) for i, raw in enumerate(body.events)]
    check_write(who, events, None)
    check_events(events, limits_of(svc.store))  # 422/413 before a token is counted
    recent = None
    if any(e.kind in _CHAT_KINDS for e in events):  # tool pairing is checked on these
        recent = await svc.store.read_last(
            tenant_id=who.tenant, session_id=session_id, branch=branch, n=_PAIRING_WINDOW
        )
    expected = if_match if if_match is not None else body.expected_seq
    try:
        result = await svc.engine.append(
            session_id,
            events,
            tenant_id=who.tenant,
            branch=branch,
            expected_seq=expected,
            idempotency_key=key,
            recent=recent,
        )
    except SeqConflict as exc:
        if if_match is None:
            raise
        raise PreconditionFailed(exc.message, expected=exc.expected, actual=exc.actual) from exc
    payload: dict[str, JSONValue] = {
        "branch": result.branch,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "replayed": result.replayed,
        "events": [event_json(e) for e in result.events],
    }
    headers = {"ETag": etag(result.last_seq)}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(payload, status_code=201, headers=headers)


@router.get("/sessions/{session_id}/events")
async def read_events(
    session_id: SessionId,
    svc: Svc,
    who: Reader,
    branch: BranchQ = "main",
    after: Annotated[int, Query(ge=0)] = 0,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Literal["asc", "desc"] = "asc",
) -> JSONResponse:
    events = await svc.store.read(
        tenant_id=who.tenant,
        session_id=session_id,
        branch=branch,
        after_seq=after,
        before_seq=before,
        limit=limit,
        order=order,
    )
    head = await _head(svc.store, who.tenant, session_id, branch)
    body = {"data": [event_json(e) for e in events], "head_seq": head}
    return JSONResponse(body, headers={"ETag": etag(head)})


@router.post("/sessions/{session_id}/branches", status_code=201)
async def fork(session_id: SessionId, body: ForkBody, svc: Svc, who: Writer) -> JSONResponse:
    """A new branch sharing ``from_branch``'s events up to ``at_seq``. Its state document
    is folded from that shared log, so it starts as the state stood at the fork point."""
    branch = await svc.store.fork(
        tenant_id=who.tenant,
        session_id=session_id,
        new_branch=body.name,
        from_branch=body.from_branch,
        at_seq=body.at_seq,
    )
    await fold_fork_state(svc.store, who.tenant, session_id, body.name)
    return JSONResponse(branch_json(branch), status_code=201)


@router.get("/sessions/{session_id}/branches")
async def list_branches(session_id: SessionId, svc: Svc, who: Reader) -> JSONResponse:
    branches = await svc.store.list_branches(tenant_id=who.tenant, session_id=session_id)
    return JSONResponse({"data": [branch_json(b) for b in branches]})


@router.post("/sessions/{session_id}/context")
async def build_context(
    session_id: SessionId, body: ContextBody, svc: Svc, who: Reader
) -> JSONResponse:
    """The messages the next model call would get, and the manifest of what was left out."""
    limits = limits_of(svc.store)
    check_message(body.message, "message", limits)
    check_message(body.system, "system", limits)
    await svc.store.get_session(tenant_id=who.tenant, session_id=session_id)
    built = await svc.reader_engine.build(
        session_id,
        body.message,
        tenant_id=who.tenant,
        model=body.model,
        budget=body.budget,
        branch=body.branch,
        system=body.system,
        policy=body.policy,
    )
    messages: list[JSONValue] = list(built.messages)
    return JSONResponse({"messages": messages, "manifest": built.manifest.to_dict()})


@router.get("/sessions/{session_id}/state")
async def get_state(
    session_id: SessionId, svc: Svc, who: Reader, branch: StateBranch = DEFAULT_BRANCH
) -> JSONResponse:
    """The branch's state document (``?branch=``, default main); ``ETag`` is its version."""
    doc = await svc.store.get_state(tenant_id=who.tenant, session_id=session_id, branch=branch)
    return JSONResponse(state_json(doc), headers={"ETag": etag(doc.version)})


@router.put("/sessions/{session_id}/state")
async def put_state(
    session_id: SessionId,
    body: StateBody,
    svc: Svc,
    who: Writer,
    if_match: IfMatch,
    branch: StateBranch = DEFAULT_BRANCH,
) -> JSONResponse:
    """Replace the branch's state document (``?branch=``, default main). ``If-Match:
    "<version>"`` makes it conditional (412). Recorded as a ``replace`` state event on that
    branch (no later sync brings back what it removed); ``_``-prefixed keys are the state
    keeper's and are not taken from the body."""
    keeper = StateKeeper(svc.store, branch=branch)
    try:
        doc = await keeper.replace(
            session_id, body.data, tenant_id=who.tenant, expected_version=if_match
        )
    except StateVersionConflict as exc:
        raise PreconditionFailed(exc.message, expected=exc.expected, actual=exc.actual) from exc
    return JSONResponse(state_json(doc), headers={"ETag": etag(doc.version)})


@router.get("/sessions/{session_id}/export", response_class=StreamingResponse)
async def export(
    session_id: SessionId, svc: Svc, who: Reader, branch: BranchQ = "main"
) -> StreamingResponse:
    """JSONL, one OpenAI message per line (state, summary and marker events are skipped).

    A stored event that cannot be read is written as it is stored, under a marker:
    ``{"chatstate_unreadable": {"seq", "reason", "problem", "raw"}}``."""
    await _head(svc.store, who.tenant, session_id, branch)  # 404 before the body starts

    async def lines() -> AsyncIterator[bytes]:
        after = 0
        while True:
            page = await svc.store.read(
                tenant_id=who.tenant,
                session_id=session_id,
                branch=branch,
                after_seq=after,
                limit=1000,
            )
            for event in page:
                if event.unreadable is not None:
                    yield (json.dumps(unreadable_line(event)) + "\n").encode()
                elif event.kind in _CHAT_KINDS:
                    line = json.dumps(to_openai(event)) + "\n"
                    yield line.encode()
            if len(page) < 1000:
                return
            after = page[-1].seq

    return StreamingResponse(lines(), media_type="application/x-ndjson")
