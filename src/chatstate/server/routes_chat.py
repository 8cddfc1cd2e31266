"""The OpenAI-compatible gateway and its resumable response streams.

``POST /v1/chat/completions`` takes the usual body plus a session id (``session_id`` in the
body, which the official client sends through ``extra_body``, or ``X-Session-Id``). The
answer streams as server-sent events whose ``id`` is the chunk's sequence number; resume
with the same request and its ``Idempotency-Key`` plus ``Last-Event-ID``, or with
``GET /v1/responses/{id}/events`` (``?after=N`` or ``Last-Event-ID``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse

from chatstate.errors import ValidationError
from chatstate.model import JSONValue
from chatstate.server.deps import IdempotencyKey, Reader, Services, Svc, Writer
from chatstate.server.errors import UpstreamError
from chatstate.server.gateway import TurnRequest
from chatstate.server.sse import collect, completion, sse
from chatstate.server.streams import ResponseInfo
from chatstate.server.views import ChatBody

__all__ = ["router"]

router = APIRouter(tags=["gateway"])

ResponseId = Annotated[str, Path(max_length=128)]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)]
_OWN_FIELDS = {"session_id", "branch", "context_budget", "messages", "stream", "model"}


def _cursor(after: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ValidationError("Last-Event-ID must be a chunk number")
        return int(last_event_id.strip())
    return after or 0


def _headers(info: ResponseInfo) -> dict[str, str]:
    return {
        "X-Session-Id": info.session_id,
        "X-Response-Id": info.id,
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }


async def _stream(svc: Services, info: ResponseInfo, after: int) -> StreamingResponse:
    open_ = await svc.responses.check_cursor(info.id, after)

    async def events() -> AsyncIterator[bytes]:
        if not open_:
            return
        async for record in svc.responses.tail(info.id, after=after, checked=True):
            yield sse(record)

    return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(info))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatBody,
    svc: Svc,
    who: Writer,
    key: IdempotencyKey,
    last_event_id: LastEventId = None,
    x_session_id: Annotated[str | None, Header(alias="X-Session-Id", max_length=128)] = None,
) -> StreamingResponse | JSONResponse:
    """A stateful chat turn: send only the newest message and a session id."""
    extra: dict[str, JSONValue] = {
        k: v
        for k, v in body.model_dump(mode="json").items()
        if k not in _OWN_FIELDS and v is not None
    }
    turn = TurnRequest(
        model=body.model,
        messages=body.messages,
        upstream_body=extra,
        session_id=body.session_id or x_session_id,
        branch=body.branch,
        idempotency_key=key,
        budget=body.context_budget,
        stream=bool(body.stream),
    )
    info = await svc.gateway.start(who, turn)
    if body.stream:
        return await _stream(svc, info, _cursor(None, last_event_id))
    records = [r async for r in svc.responses.tail(info.id)]
    answer = collect(records)
    if answer.status == "error" and not answer.content:
        message = records[-1].payload.get("message") if records else None
        raise UpstreamError(str(message or "the upstream failed"))
    payload = completion(info.id, info.model, answer)
    payload["chatstate"] = {"status": answer.status, "session_id": info.session_id}
    return JSONResponse(payload, headers=_headers(info))


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: ResponseId, svc: Svc, who: Reader) -> JSONResponse:
    info = await svc.responses.info(who.tenant, response_id)
    head = await svc.responses.head(info.id)
    status = head.type if head is not None and head.terminal else "in_progress"
    body: dict[str, JSONValue] = {
        "id": info.id,
        "session_id": info.session_id,
        "branch": info.branch,
        "model": info.model,
        "created_at": info.created_at.isoformat(),
        "status": status,
        "last_seq": head.seq if head is not None else 0,
    }
    return JSONResponse(body)


@router.get("/v1/responses/{response_id}/events", response_class=StreamingResponse)
async def response_events(
    response_id: ResponseId,
    svc: Svc,
    who: Reader,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """The chunks after the cursor, then the live tail, then one terminal event."""
    info = await svc.responses.info(who.tenant, response_id)
    return await _stream(svc, info, _cursor(after, last_event_id))


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: ResponseId, svc: Svc, who: Writer) -> JSONResponse:
    """Stop generation; the partial answer is stored, marked cancelled."""
    info = await svc.responses.info(who.tenant, response_id)
    await svc.gateway.cancel(info)
    head = await svc.responses.head(info.id)
    status = head.type if head is not None and head.terminal else "in_progress"
    return JSONResponse({"id": info.id, "status": status})
