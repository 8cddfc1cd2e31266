"""Tenants, API keys and scopes.

**Keys.** A key reads ``cs_<key id>_<secret>``. It is stored in the database through the
ordinary :class:`~chatstate.store.protocol.Store`, as one session in the reserved tenant
``chatstate.keys`` whose id is the key id and whose metadata holds the owning tenant, the
scopes and the SHA-256 of the secret (never the secret). A request's key is looked up by
its id and its hash compared with :func:`hmac.compare_digest`. Lookups are cached for
``key_cache_seconds``, so a revoked key stops working within that time on every process.

**Scopes.** ``read`` for GET routes, ``write`` for everything that changes a session, and
``admin`` to write ``system``/``developer`` messages, tool events and non-chat events.

**Development mode.** With no key in the database, a server bound to a loopback address
serves every request as tenant ``default`` with all scopes, and says so at start: with no
``Authorization`` header or with any bearer token (the official ``openai`` client always
sends one). It refuses to start on any other interface without keys. As soon as a key
exists, every request needs one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chatstate.errors import NotFound, ValidationError
from chatstate.model import Event, NewEvent
from chatstate.server.errors import Forbidden, Unauthorized
from chatstate.store.protocol import Store
from chatstate.store.rules import check_id

__all__ = [
    "DEV_TENANT",
    "KEYS_TENANT",
    "RESERVED_TENANTS",
    "RESPONSES_TENANT",
    "SCOPES",
    "KeyRing",
    "Principal",
    "authenticate",
    "check_write",
    "create_key",
    "parse_scopes",
    "revoke_key",
]

log = logging.getLogger(__name__)

KEYS_TENANT = "chatstate.keys"
RESPONSES_TENANT = "chatstate.responses"
RESERVED_TENANTS = frozenset({KEYS_TENANT, RESPONSES_TENANT})
DEV_TENANT = "default"
SCOPES = ("read", "write", "admin")
_KEY_RE = re.compile(r"cs_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})\Z")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the tenant every object is looked up in, and what it may do."""

    tenant: str
    scopes: frozenset[str]
    key_id: str

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


DEV_PRINCIPAL = Principal(tenant=DEV_TENANT, scopes=frozenset(SCOPES), key_id="dev")


def check_write(principal: Principal, events: Sequence[NewEvent], last: Event | None) -> None:
    """system/developer messages, tool events and non-chat events need ``admin``; a tool
    result that answers the stored assistant tool call (``last``) is the one exception."""
    if principal.can("admin"):
        return
    pending = {c.id for c in last.tool_calls} if last is not None else set()
    for event in events:
        if event.kind == "tool_result" and event.tool_call_id in pending:
            continue
        if event.role in ("system", "developer", "tool") or event.kind != "message":
            raise Forbidden(f"writing {event.role or event.kind} events needs the admin scope")


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = scopes - set(SCOPES)
    if not scopes or unknown:
        raise ValidationError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    return scopes


def _digest(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


async def create_key(store: Store, *, tenant: str, scopes: str | Iterable[str]) -> str:
    """Store a new key for ``tenant`` and return it; it is shown this once."""
    check_id(tenant, "tenant")
    if tenant in RESERVED_TENANTS:
        raise ValidationError(f"tenant {tenant!r} is reserved")
    chosen = parse_scopes(scopes)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await store.create_session(
        tenant_id=KEYS_TENANT,
        session_id=key_id,
        metadata={
            "tenant": tenant,
            "scopes": ",".join(s for s in SCOPES if s in chosen),
            "sha256": _digest(key_id, secret),
            "v": 1,
        },
    )
    return f"cs_{key_id}_{secret}"


async def revoke_key(store: Store, *, key_id: str) -> None:
    await store.delete_session(tenant_id=KEYS_TENANT, session_id=check_id(key_id, "key id"))


class KeyRing:
    """Resolves ``Authorization: Bearer`` values to principals, with a short cache."""

    def __init__(self, store: Store, *, cache_seconds: float = 10.0) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}
        self._any: tuple[float, bool] | None = None

    async def any_keys(self) -> bool:
        now = time.monotonic()
        if self._any is not None and now - self._any[0] < self._ttl:
            return self._any[1]
        page = await self._store.list_sessions(tenant_id=KEYS_TENANT, limit=1)
        found = bool(page.items)
        self._any = (now, found)
        return found

    async def resolve(self, token: str) -> Principal | None:
        """The principal for a presented key, or ``None`` for a wrong or unknown one."""
        match = _KEY_RE.match(token)
        if match is None:
            return None
        key_id, secret = match.group(1), match.group(2)
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] >= self._ttl:
            cached = (now, *await self._load(key_id))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = cached
        _, principal, digest = cached
        # Compare even for unknown ids, so timing says nothing about which ids exist.
        ok = hmac.compare_digest(_digest(key_id, secret), digest or "0" * 64)
        return principal if ok and principal is not None else None

    async def _load(self, key_id: str) -> tuple[Principal | None, str]:
        try:
            session = await self._store.get_session(tenant_id=KEYS_TENANT, session_id=key_id)
        except NotFound:
            return None, ""
        meta = session.metadata
        tenant, scopes, digest = meta.get("tenant"), meta.get("scopes"), meta.get("sha256")
        if not (isinstance(tenant, str) and isinstance(scopes, str) and isinstance(digest, str)):
            log.warning("key %s has a malformed record; refusing it", key_id)
            return None, ""
        return Principal(tenant=tenant, scopes=parse_scopes(scopes), key_id=key_id), digest


async def authenticate(keys: KeyRing, authorization: str | None, *, dev_mode: bool) -> Principal:
    """The principal for a request's ``Authorization`` header.

    In development mode (loopback, no key in the database) every request is the
    development principal, whatever it sends: the official clients always send a bearer
    token (``api_key="dev"``). Once a key exists, a valid key is required.
    """
    if dev_mode and not await keys.any_keys():
        return DEV_PRINCIPAL
    if authorization is None:
        raise Unauthorized("send Authorization: Bearer <key> (chatstate keys create)")
    scheme, _, token = authorization.partition(" ")
    found = await keys.resolve(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise Unauthorized("unknown or malformed API key")
    return found
