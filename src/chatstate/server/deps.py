"""What every route shares: the application's objects, the caller, and request headers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, cast

import httpx
from fastapi import Depends, Header, Query, Request

from chatstate.context.engine import ContextEngine
from chatstate.health import HealthMetrics
from chatstate.server.auth import KeyRing, Principal, authenticate
from chatstate.server.config import ServerConfig
from chatstate.server.errors import Forbidden, PreconditionFailed
from chatstate.server.fleet import MetricsShare
from chatstate.server.gateway import Gateway
from chatstate.server.middleware import Metrics, RateLimiter
from chatstate.server.streams import ResponseLog
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id

__all__ = [
    "Admin",
    "IdempotencyKey",
    "IfMatch",
    "Reader",
    "Services",
    "StateBranch",
    "Svc",
    "Writer",
    "etag",
    "services",
]

_ETAG = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*\Z')


@dataclass(slots=True)
class Services:
    """Everything the routes use, built once per application in its lifespan."""

    config: ServerConfig
    store: Store
    engine: ContextEngine
    reader_engine: ContextEngine
    """The same, without compaction: builds for ``/context`` only read."""
    responses: ResponseLog
    gateway: Gateway
    keys: KeyRing
    limiter: RateLimiter
    metrics: Metrics
    http: httpx.AsyncClient
    dev_mode: bool
    health: HealthMetrics = field(default_factory=HealthMetrics)
    """Session-health counters, fed after each gateway turn."""
    fleet: MetricsShare | None = None
    """With ``redis_url``: ``/metrics`` sums every worker's series."""


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


async def _principal(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    svc = services(request)
    principal = await authenticate(svc.keys, authorization, dev_mode=svc.dev_mode)
    await svc.limiter.acquire(principal.key_id)
    return principal


def _needs(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.can(scope):
            raise Forbidden(f"this key lacks the {scope!r} scope")
        return principal

    return check


def idempotency_key_header(
    key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> str | None:
    return None if key is None else check_id(key, "Idempotency-Key", max_len=255)


def expected_from_if_match(
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=64)] = None,
) -> int | None:
    """``If-Match: "12"`` (the ETag of a read) is the head the caller expects."""
    if if_match is None:
        return None
    match = _ETAG.match(if_match)
    if match is None:
        raise PreconditionFailed(
            f'If-Match must be a head seq such as "12", got {if_match[:40]!r}',
            expected=-1,
            actual=-1,
        )
    return int(match.group(1))


def etag(seq: int) -> str:
    return f'"{seq}"'


Reader = Annotated[Principal, Depends(_needs("read"))]
Writer = Annotated[Principal, Depends(_needs("write"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
Svc = Annotated[Services, Depends(services)]
IdempotencyKey = Annotated[str | None, Depends(idempotency_key_header)]
IfMatch = Annotated[int | None, Depends(expected_from_if_match)]
StateBranch = Annotated[
    str,
    Query(
        max_length=128,
        description=(
            "The branch whose state document this is (default main). Each branch has its "
            "own document and version: a fork starts from the state as it stood at the "
            "fork point, and later changes on either branch never show on the other. An "
            "unknown branch is a 404."
        ),
    ),
]
