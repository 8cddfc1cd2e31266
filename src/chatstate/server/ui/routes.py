"""The inspector's pages under ``/ui`` (left out of the OpenAPI schema: they are HTML).

Every page is rendered on the server from the store's API; ``static/ui.js`` only polls
``/ui/s/{id}/live`` while a timeline is open. Errors render as pages: no key sends the
browser to the login page, anything else shows the error and its status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute

from chatstate.errors import ChatstateError, ValidationError
from chatstate.server.deps import services
from chatstate.server.errors import Unauthorized
from chatstate.server.routes_sessions import fold_fork_state
from chatstate.server.ui import data, insight
from chatstate.server.ui.access import COOKIE, check_origin, principal_of, resolve_key
from chatstate.server.ui.render import env, lane_of, page
from chatstate.store.erase import erase
from chatstate.store.rules import check_id

__all__ = ["router"]


class _PageRoute(APIRoute):
    """Errors of a page become a page (or the login redirect), not the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[object, object, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized as exc:
                if request.url.path.endswith("/live"):
                    return JSONResponse(exc.to_dict(), status_code=401)
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"/ui/login?next={target}", status_code=303)
            except ChatstateError as exc:
                return page(request, "error.html", exc.status, error=exc)

        return run


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_PageRoute)
Sid = Annotated[str, Query(max_length=128)]
Model = Annotated[str, Query(max_length=200)]


def _sid(session_id: str) -> str:
    return check_id(session_id, "session id")


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the pages post nothing else; no multipart parser needed)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise ValidationError("send the form url-encoded")
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=20)
    return {name: values[-1] for name, values in fields.items()}


def _field(
    form: dict[str, str], name: str, *, default: str | None = None, max_len: int = 200
) -> str:
    value = form.get(name, default)
    if value is None or len(value) > max_len:
        raise ValidationError(f"form field {name!r} is missing or longer than {max_len}")
    return value


def _number(form: dict[str, str], name: str) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= 10_000_000:
        raise ValidationError(f"form field {name!r} must be a whole number from 1 to 10000000")
    return int(raw)


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def sessions(
    request: Request,
    q: Annotated[str | None, Query(max_length=128)] = None,
    user: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
) -> HTMLResponse:
    who = await principal_of(request)
    rows, next_cursor = await data.session_rows(
        services(request).store, who.tenant, user=user or None, query=q or None,
        limit=limit, cursor=cursor,
    )  # fmt: skip
    return page(
        request, "sessions.html", rows=rows, q=q or "", user=user or "", limit=limit,
        next_cursor=next_cursor, cursor=cursor, who=who,
    )  # fmt: skip


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/ui") -> HTMLResponse:
    return page(request, "login.html", next=next if next.startswith("/ui") else "/ui", error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    check_origin(request)
    form = await _form(request)
    key = _field(form, "key")
    next = _field(form, "next", default="/ui", max_len=2000)
    target = next if next.startswith("/ui") and not next.startswith("/ui//") else "/ui"
    if await resolve_key(request, key) is None:
        return page(request, "login.html", 401, next=target, error="Unknown or revoked key.")
    response = RedirectResponse(target, status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path="/ui",
                        secure=secure)  # fmt: skip
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    check_origin(request)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/s/{session_id}", response_class=HTMLResponse)
async def timeline(
    request: Request,
    session_id: str,
    focus: Annotated[int | None, Query(ge=1)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    lane: Annotated[str | None, Query(max_length=128)] = None,
) -> HTMLResponse:
    who = await principal_of(request)
    svc = services(request)
    view = await data.timeline(
        svc.store, svc.responses, who.tenant, _sid(session_id),
        lane=None if lane is None else check_id(lane, "lane"), before=before, focus=focus,
    )  # fmt: skip
    return page(request, "timeline.html", view=view, who=who, focus=focus,
                tab="timeline", live_key=_signature(view))  # fmt: skip


def _signature(view: data.Timeline) -> str:
    """Changes when anything the live timeline shows changes."""
    parts = []
    for lane in view.lanes:
        head = lane.events[-1].seq if lane.events else 0
        pending = lane.pending
        parts.append(f"{lane.branch.name}:{head}:{lane.branch.head_seq}")
        if pending is not None:
            parts.append(f"{pending.status}:{len(pending.content)}:{len(pending.tool_calls)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@router.get("/s/{session_id}/live")
async def live(request: Request, session_id: str, key: str = "") -> JSONResponse:
    """The timeline grid again when it changed since ``key`` (polled by ui.js)."""
    who = await principal_of(request)
    svc = services(request)
    view = await data.timeline(svc.store, svc.responses, who.tenant, _sid(session_id))
    signature = _signature(view)
    if signature == key:
        return JSONResponse({"key": key, "changed": False})
    html = env.get_template("_grid.html").render(view=view, who=who, focus=None)
    return JSONResponse({"key": signature, "changed": True, "html": html})


async def _context_page(
    request: Request,
    session_id: str,
    *,
    branch: str,
    seq: int | None,
    model: str,
    budget: int | None,
    message: str | None,
) -> HTMLResponse:
    who = await principal_of(request)
    svc = services(request)
    sid = _sid(session_id)
    check_id(branch, "branch")
    session = await svc.store.get_session(tenant_id=who.tenant, session_id=sid)
    branches = {
        b.name: b for b in await svc.store.list_branches(tenant_id=who.tenant, session_id=sid)
    }
    events = await insight.read_branch(svc.store, who.tenant, sid, branch, upto=None,
                                       limit=insight.REPLAY_LIMIT)  # fmt: skip
    turns = [e.seq for e in events if e.kind == "message" and e.role == "user"]
    if budget is None and svc.config.context_budget is not None:
        budget = svc.config.context_budget
    built = None
    if message is not None:
        built = await svc.reader_engine.build(sid, message, tenant_id=who.tenant, model=model,
                                              budget=budget, branch=branch)  # fmt: skip
    else:
        if seq is None and turns:
            seq = turns[-1]
        if seq is not None:
            if seq not in turns:
                raise ValidationError(f"seq {seq} is not a user message of branch {branch!r}")
            built = await insight.context_at(svc.store, who.tenant, sid, branch=branch, seq=seq,
                                             model=model, budget=budget)  # fmt: skip
    manifest = built.manifest if built is not None else None
    lanes = {s: lane_of(branches, branch, s) for s in (e.seq for e in events)}
    return page(
        request, "context.html", session=session, branches=branches, branch=branch, seq=seq,
        turns=turns, model=model, budget=budget, message=message, built=built,
        manifest=manifest, lanes=lanes, tab="context", who=who,
        bar=insight.section_bar(manifest.sections, manifest.budget) if manifest else [],
        default_budget=insight.budget_of(model, budget),
    )  # fmt: skip


@router.get("/s/{session_id}/context", response_class=HTMLResponse)
async def context(
    request: Request,
    session_id: str,
    branch: Annotated[str, Query(max_length=128)] = "main",
    seq: Annotated[int | None, Query(ge=1)] = None,
    model: Model = "gpt-4o",
    budget: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
) -> HTMLResponse:
    return await _context_page(request, session_id, branch=branch, seq=seq, model=model,
                               budget=budget, message=None)  # fmt: skip


@router.post("/s/{session_id}/context", response_class=HTMLResponse)
async def context_new(request: Request, session_id: str) -> HTMLResponse:
    """Build the context for a new message at the branch head; nothing is stored."""
    check_origin(request)
    form = await _form(request)
    message = _field(form, "message", max_len=100_000)
    if not message.strip():
        raise ValidationError("write the new message to build the context for")
    return await _context_page(
        request, session_id, branch=_field(form, "branch", default="main", max_len=128),
        seq=None, model=_field(form, "model", default="gpt-4o"), budget=_number(form, "budget"),
        message=message,
    )  # fmt: skip


@router.get("/s/{session_id}/state", response_class=HTMLResponse)
async def state(
    request: Request,
    session_id: str,
    branch: Annotated[str | None, Query(max_length=128)] = None,
) -> HTMLResponse:
    """The state document of one branch (``?branch=``, default the session's)."""
    who = await principal_of(request)
    svc = services(request)
    sid = _sid(session_id)
    session = await svc.store.get_session(tenant_id=who.tenant, session_id=sid)
    name = check_id(branch or session.default_branch, "branch")
    doc = await svc.store.get_state(tenant_id=who.tenant, session_id=sid, branch=name)
    branches = {
        b.name: b for b in await svc.store.list_branches(tenant_id=who.tenant, session_id=sid)
    }
    view = insight.state_view(doc.version, dict(doc.data))
    return page(request, "state.html", session=session, state=view, tab="state", who=who,
                branch=name, branches=list(branches),
                lane=lambda seq: lane_of(branches, name, seq))  # fmt: skip


@router.get("/s/{session_id}/health", response_class=HTMLResponse)
async def health(request: Request, session_id: str) -> HTMLResponse:
    who = await principal_of(request)
    svc = services(request)
    sid = _sid(session_id)
    session = await svc.store.get_session(tenant_id=who.tenant, session_id=sid)
    events = await insight.read_branch(svc.store, who.tenant, sid, session.default_branch,
                                       upto=None, limit=insight.REPLAY_LIMIT)  # fmt: skip
    view = insight.health_view(events, svc.config.context_budget)
    return page(request, "health.html", session=session, health=view, tab="health", who=who)


@router.get("/s/{session_id}/delete", response_class=HTMLResponse)
async def delete_confirm(request: Request, session_id: str) -> HTMLResponse:
    who = await principal_of(request, "write")
    sid = _sid(session_id)
    session = await services(request).store.get_session(tenant_id=who.tenant, session_id=sid)
    return page(request, "confirm.html", session=session, action="delete", who=who)


@router.post("/s/{session_id}/delete")
async def delete(request: Request, session_id: str) -> Response:
    who = await principal_of(request, "write")
    check_origin(request)
    sid = _sid(session_id)
    if (await _form(request)).get("confirm") != sid:
        raise ValidationError("type the session id to confirm the deletion")
    svc = services(request)
    try:
        await erase(svc.store, who.tenant, session_id=sid)
    finally:
        await svc.gateway.forget(who.tenant, sid)
    return RedirectResponse("/ui?deleted=" + quote(sid), status_code=303)


@router.get("/s/{session_id}/fork", response_class=HTMLResponse)
async def fork_confirm(
    request: Request,
    session_id: str,
    at: Annotated[int, Query(ge=0)],
    branch: Annotated[str, Query(max_length=128)] = "main",
) -> HTMLResponse:
    who = await principal_of(request, "write")
    sid = _sid(session_id)
    session = await services(request).store.get_session(tenant_id=who.tenant, session_id=sid)
    return page(request, "confirm.html", session=session, action="fork", at=at,
                branch=check_id(branch, "branch"), name=f"{branch}-at-{at}", who=who)  # fmt: skip


@router.post("/s/{session_id}/fork")
async def fork(request: Request, session_id: str) -> Response:
    who = await principal_of(request, "write")
    check_origin(request)
    sid = _sid(session_id)
    form = await _form(request)
    at = _field(form, "at", max_len=12)
    if not at.isdigit():
        raise ValidationError("form field 'at' must be a seq")
    name = check_id(_field(form, "name"), "branch name")
    source = check_id(_field(form, "branch", default="main"), "branch")
    store = services(request).store
    created = await store.fork(
        tenant_id=who.tenant, session_id=sid, new_branch=name, from_branch=source, at_seq=int(at)
    )
    await fold_fork_state(store, who.tenant, sid, created.name)
    return RedirectResponse(f"/ui/s/{quote(sid)}#lane-{quote(created.name)}", status_code=303)
