"""One erase: a session, or every session of a user, with everything that came from it.

:func:`erase` is the only way the HTTP routes, the CLI and the TTL purge remove a
conversation. It removes the session's events, branches, state document and idempotency
records (one ``delete_session`` of the store) and its **response logs**: the gateway keeps
each streamed answer in a hidden session of the reserved tenant :data:`RESPONSES_TENANT`
whose id is the response id and whose metadata ``owner`` is ``"{tenant}/{session}"``
(see :mod:`chatstate.server.streams`).

**Order, so a retry finishes what a crash interrupted.** The response logs go first, the
session last: until the session is gone it is still listed (expired ones included), so
calling :func:`erase` again after a failure at any step finds whatever is left and
removes it; once the session is gone nothing of it remains. The opposite order (session
first) orphans the logs when the process dies between the two, and the retry answers 404.

:func:`purge_expired` is the TTL purge: it first erases the response logs whose owning
session has expired or is gone, then calls the store's ``purge_expired``. A session that
expires between the two steps keeps its logs until the next purge (the logs' own TTL
bounds them too).

Physically, each backend keeps erased bytes as documented in ``docs/architecture.md``
(SQLite: none, with ``secure_delete`` and a truncated WAL; PostgreSQL: dead tuples until
VACUUM; Redis: AOF/RDB files until their next rewrite).
"""

from __future__ import annotations

from contextlib import suppress

from chatstate.errors import NotFound, SessionExpired, ValidationError
from chatstate.store.protocol import Store

__all__ = ["RESPONSES_TENANT", "erase", "erase_responses", "purge_expired"]

RESPONSES_TENANT = "chatstate.responses"
"""The reserved tenant of the gateway's response logs (one hidden session per response)."""

_PAGE = 200


async def erase(
    store: Store, tenant_id: str, *, session_id: str | None = None, user_id: str | None = None
) -> int:
    """Erase one session (``session_id``) or every session of ``user_id`` in ``tenant_id``,
    expired ones not purged yet included, with their response logs. Returns how many
    sessions were erased; ``SessionNotFound`` for an unknown ``session_id`` (its stray
    response logs are erased all the same)."""
    if (session_id is None) == (user_id is None):
        raise ValidationError("erase needs exactly one of session_id and user_id")
    if session_id is not None:
        await erase_responses(store, tenant_id, session_id)
        await store.delete_session(tenant_id=tenant_id, session_id=session_id)
        return 1
    erased = 0
    while True:
        page = await store.list_sessions(
            tenant_id=tenant_id, user_id=user_id, limit=_PAGE, include_expired=True
        )
        if not page.items:
            return erased
        for session in page.items:
            await erase_responses(store, tenant_id, session.id)
            try:
                await store.delete_session(tenant_id=tenant_id, session_id=session.id)
            except NotFound:
                continue  # erased concurrently
            erased += 1


async def erase_responses(store: Store, tenant_id: str, session_id: str | None = None) -> int:
    """Delete the response logs of one session (or, with ``None``, of the whole tenant),
    expired ones included. Returns how many were deleted."""
    flt: dict[str, str | int | float | bool] = (
        {"tenant": tenant_id} if session_id is None else {"owner": f"{tenant_id}/{session_id}"}
    )
    deleted = 0
    while True:
        page = await store.list_sessions(
            tenant_id=RESPONSES_TENANT, metadata=flt, limit=_PAGE, include_expired=True
        )
        if not page.items:
            return deleted
        for item in page.items:
            try:
                await store.delete_session(tenant_id=RESPONSES_TENANT, session_id=item.id)
            except NotFound:
                continue
            deleted += 1


async def purge_expired(store: Store) -> int:
    """The TTL purge: response logs of expired or vanished sessions, then the store's own
    ``purge_expired`` (expired sessions, stale idempotency records). Returns the number
    of sessions the store purged. Costs one ``get_session`` per distinct owner of a
    stored response log."""
    cursor: str | None = None
    gone: dict[str, bool] = {}  # owner -> expired or missing, looked up once per purge
    while True:
        page = await store.list_sessions(
            tenant_id=RESPONSES_TENANT, limit=_PAGE, cursor=cursor, include_expired=True
        )
        for item in page.items:
            owner = str(item.metadata.get("owner", ""))
            if owner not in gone:
                tenant, _, session_id = owner.partition("/")
                gone[owner] = await _owner_gone(store, tenant, session_id)
            if gone[owner]:
                with suppress(NotFound):
                    await store.delete_session(tenant_id=RESPONSES_TENANT, session_id=item.id)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return await store.purge_expired()


async def _owner_gone(store: Store, tenant: str, session_id: str) -> bool:
    try:
        await store.get_session(tenant_id=tenant, session_id=session_id)
    except (SessionExpired, NotFound, ValidationError):
        return True
    return False
