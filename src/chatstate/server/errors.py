"""HTTP errors of the service, and the one place where every error becomes a response.

The store's typed errors (:mod:`chatstate.errors`) already carry their HTTP status; the
service adds the few that only exist over HTTP::

    ChatstateError
    ├── NotFound (404)
    │   └── ResponseNotFound (404)
    │       └── ResponseExpired (410)   a response log past its retention
    ├── Conflict (409)
    │   └── TurnInProgress (409)        another chat turn of this session is still running
    ├── Unauthorized (401)              no key, or an unknown one
    ├── Forbidden (403)                 the key lacks the scope (never for another tenant's
    │                                   object: that is a 404)
    ├── PreconditionFailed (412)        ``If-Match`` did not match the branch head
    ├── RateLimited (429)
    └── UpstreamError (502)             the upstream model endpoint failed

:func:`install` registers handlers so that every error, including FastAPI's own request
validation, leaves as ``{"error": code, "message": ...}`` with its status; on the
OpenAI-compatible gateway route (:data:`OPENAI_PATHS`) in OpenAI's own shape,
``{"error": {"message", "type", "code", "param"}}``, so that the official clients and
the agent frameworks built on them show the message, not just the status. Bad input is
never a 500: an unexpected exception is logged and answered with a generic 500 body.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatstate.errors import ChatstateError, Conflict, NotFound, SeqConflict

__all__ = [
    "OPENAI_PATHS",
    "Forbidden",
    "PreconditionFailed",
    "RateLimited",
    "ResponseExpired",
    "ResponseNotFound",
    "TurnInProgress",
    "Unauthorized",
    "UpstreamError",
    "error_response",
    "install",
    "shaped",
]

OPENAI_PATHS = frozenset({"/v1/chat/completions"})
"""Routes whose errors take OpenAI's shape."""

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    411: "length_required",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


class ResponseNotFound(NotFound):
    code = "response_not_found"


class ResponseExpired(ResponseNotFound):
    status = 410
    code = "response_expired"


class TurnInProgress(Conflict):
    """Policy for two turns at once on one session: the second is rejected."""

    code = "turn_in_progress"


class Unauthorized(ChatstateError):
    status = 401
    code = "unauthorized"


class Forbidden(ChatstateError):
    status = 403
    code = "forbidden"


class PreconditionFailed(SeqConflict):
    """``If-Match`` named another head: 412 (the same stale append sent as a body field
    is a plain :class:`~chatstate.errors.SeqConflict`, 409)."""

    status = 412
    code = "precondition_failed"


class RateLimited(ChatstateError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(ChatstateError):
    status = 502
    code = "upstream_error"


def error_response(exc: ChatstateError, *, path: str = "") -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = shaped(path, exc.to_dict())
    return JSONResponse(body, status_code=exc.status, headers=headers)


def shaped(path: str, body: dict[str, object]) -> dict[str, object]:
    """``body`` as it leaves ``path``: on the OpenAI-compatible routes, OpenAI's error
    object (``type`` and ``code`` are chatstate's code; other fields stay beside it)."""
    if path not in OPENAI_PATHS:
        return body
    code = body.get("error")
    inner: dict[str, object] = {
        "message": body.get("message"),
        "type": code,
        "code": code,
        "param": None,
    }
    inner.update({k: v for k, v in body.items() if k not in ("error", "message")})
    return {"error": inner}


async def _chatstate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatstateError)  # noqa: S101 - registered for this type only
    if exc.status >= 500:
        log.warning("request failed: %s (%s)", exc.code, exc.message)
    return error_response(exc, path=request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing the input (which may not even encode as JSON)."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    details = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")).encode("utf-8", "replace").decode("utf-8"),
        }
        for e in exc.errors()[:20]
    ]
    body: dict[str, object] = {
        "error": "invalid_input",
        "message": "request validation failed",
        "details": details,
    }
    return JSONResponse(shaped(request.url.path, body), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = _HTTP_CODES.get(exc.status_code, "error")
    body: dict[str, object] = {"error": code, "message": str(exc.detail)}
    return JSONResponse(
        shaped(request.url.path, body), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette re-raises after this answer and the server then drops the connection, so
    the answer says so (``Connection: close``): a client never reuses a dead socket."""
    log.error("unhandled error", exc_info=exc)
    body = {"error": "internal", "message": "internal error"}
    return JSONResponse(body, status_code=500, headers={"Connection": "close"})


def install(app: FastAPI) -> None:
    """Register the handlers: the only place errors become HTTP responses."""
    app.add_exception_handler(ChatstateError, _chatstate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
