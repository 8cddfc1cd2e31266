"""Session state changes and the session health report over HTTP.

``POST /v1/sessions/{id}/state/facts`` sets, corrects, pins, unpins or deletes one fact
through :class:`~chatstate.state.StateKeeper` (each change a ``state`` event in the log of
the branch named by ``?branch=``, default main, so the branch's document stays
reproducible from its log); ``GET /v1/sessions/{id}/health`` analyses
the newest events of a branch (``?branch=``) with :func:`chatstate.health.analyse`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from chatstate.errors import ValidationError
from chatstate.health import analyse
from chatstate.model import DEFAULT_BRANCH, Event
from chatstate.server.deps import IdempotencyKey, Reader, StateBranch, Svc, Writer, etag
from chatstate.server.views import state_json
from chatstate.state import StateKeeper

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["state and health"])
SessionId = Annotated[str, Path(max_length=128)]


class FactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["set", "correct", "pin", "unpin", "delete"] = "set"
    key: str = Field(min_length=1, max_length=128)
    value: str | None = Field(default=None, max_length=4096)


@router.post("/sessions/{session_id}/state/facts")
async def change_fact(
    session_id: SessionId,
    body: FactBody,
    svc: Svc,
    who: Writer,
    key: IdempotencyKey = None,
    branch: StateBranch = DEFAULT_BRANCH,
) -> JSONResponse:
    """One fact change on the branch (``?branch=``, default main), recorded as a ``state``
    event there; answers the branch's new state document."""
    keeper = StateKeeper(svc.store, branch=branch)
    tenant = who.tenant
    if body.op in ("set", "correct") and body.value is None:
        raise ValidationError(f"op {body.op!r} needs a value")
    if body.op == "set":
        doc = await keeper.set_fact(
            session_id, body.key, body.value or "", tenant_id=tenant, idempotency_key=key
        )
    elif body.op == "correct":
        doc = await keeper.correct_fact(
            session_id, body.key, body.value or "", tenant_id=tenant, idempotency_key=key
        )
    elif body.op == "delete":
        doc = await keeper.delete_fact(session_id, body.key, tenant_id=tenant)
    else:
        doc = await keeper.pin_fact(session_id, body.key, tenant_id=tenant, pinned=body.op == "pin")
    return JSONResponse(state_json(doc), headers={"ETag": etag(doc.version)})


@router.get("/sessions/{session_id}/health")
async def health_report(
    session_id: SessionId,
    svc: Svc,
    who: Reader,
    budget: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 2000,
    branch: Annotated[
        str, Query(max_length=128, description="The branch to analyse (default main).")
    ] = DEFAULT_BRANCH,
) -> JSONResponse:
    """Re-asks, contradictions, pressure, summary loss and drift over the newest ``limit``
    events of the branch (``?branch=``, default main: a fork's own events and the parent's
    before the fork point), each flag with its detector name and evidence seqs."""
    events: list[Event] = []
    before: int | None = None
    while len(events) < limit:
        page = await svc.store.read(
            tenant_id=who.tenant,
            session_id=session_id,
            branch=branch,
            before_seq=before,
            limit=min(1000, limit - len(events)),
            order="desc",
        )
        if not page:
            break
        events += page
        before = page[-1].seq
    events.reverse()
    report = analyse(events, budget=budget)
    return JSONResponse(report.to_dict())
