"""Who is looking at the inspector: the same API keys as the HTTP API, kept in a cookie.

A browser cannot add ``Authorization`` to a link it follows, so ``/ui/login`` takes a key
once, checks it with the server's :class:`~chatstate.server.auth.KeyRing` and keeps it in
an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/ui``. Every page resolves the
cookie (or an ``Authorization`` header) again, so a revoked key stops working within the
key cache time, as for the API. Development mode (no keys, loopback) needs no login.
Reading needs the ``read`` scope; deleting and forking need ``write``, a confirmation
step, and a same-origin POST.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from chatstate.server.auth import DEV_PRINCIPAL, Principal
from chatstate.server.deps import services
from chatstate.server.errors import Forbidden, Unauthorized

__all__ = ["COOKIE", "check_origin", "principal_of", "resolve_key"]

COOKIE = "chatstate_ui_key"


async def resolve_key(request: Request, token: str) -> Principal | None:
    return await services(request).keys.resolve(token.strip())


async def principal_of(request: Request, scope: str = "read") -> Principal:
    """The caller with ``scope``: :class:`Unauthorized` (to the login page) without a key."""
    svc = services(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value if scheme.lower() == "bearer" else request.cookies.get(COOKIE)
    if token:
        found = await resolve_key(request, token)
        if found is None:
            raise Unauthorized("unknown or revoked API key")
        principal = found
    elif svc.dev_mode and not await svc.keys.any_keys():
        principal = DEV_PRINCIPAL
    else:
        raise Unauthorized("log in with an API key")
    await svc.limiter.acquire(principal.key_id)
    if not principal.can(scope):
        raise Forbidden(f"this key lacks the {scope!r} scope")
    return principal


def check_origin(request: Request) -> None:
    """A form POST must come from this origin (the cookie is SameSite=Strict as well)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return  # not a browser (curl with a bearer key): nothing to forge
    if urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-origin form posts are refused")
