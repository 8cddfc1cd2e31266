"""A store that hands every call to another store: the base of wrappers (the Redis tier).

Subclass it and override what the wrapper changes; everything else reaches the wrapped
store unchanged, so a wrapper never restates the contract's rules (the wrapped store's
front applies them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Capabilities,
    Event,
    JSONValue,
    NewEvent,
    Order,
    Page,
    SeqRange,
    Session,
    StateDoc,
)
from chatstate.store.protocol import Store

__all__ = ["StoreWrapper"]


class StoreWrapper:
    """A :class:`~chatstate.store.protocol.Store` that delegates to ``store``."""

    def __init__(self, store: Store, *, owns_store: bool = True) -> None:
        self._store = store
        self._owns_store = owns_store

    @property
    def store(self) -> Store:
        """The wrapped store."""
        return self._store

    @property
    def capabilities(self) -> Capabilities:
        return self._store.capabilities

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        return await self._store.create_session(
            tenant_id=tenant_id,
            session_id=session_id,
            user_id=user_id,
            metadata=metadata,
            ttl_seconds=ttl_seconds,
        )

    async def get_session(self, *, tenant_id: str, session_id: str) -> Session:
        return await self._store.get_session(tenant_id=tenant_id, session_id=session_id)

    async def list_sessions(
        self,
        *,
        tenant_id: str,
        user_id: str | None = None,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_expired: bool = False,
    ) -> Page[Session]:
        return await self._store.list_sessions(
            tenant_id=tenant_id,
            user_id=user_id,
            metadata=metadata,
            limit=limit,
            cursor=cursor,
            include_expired=include_expired,
        )

    async def set_ttl(
        self, *, tenant_id: str, session_id: str, ttl_seconds: float | None
    ) -> Session:
        return await self._store.set_ttl(
            tenant_id=tenant_id, session_id=session_id, ttl_seconds=ttl_seconds
        )

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        await self._store.delete_session(tenant_id=tenant_id, session_id=session_id)

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        return await self._store.delete_sessions(tenant_id=tenant_id, user_id=user_id)

    async def purge_expired(self) -> int:
        return await self._store.purge_expired()

    async def append(
        self,
        *,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str = DEFAULT_BRANCH,
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        return await self._store.append(
            tenant_id=tenant_id,
            session_id=session_id,
            events=events,
            branch=branch,
            expected_seq=expected_seq,
            idempotency_key=idempotency_key,
        )

    async def read(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = DEFAULT_BRANCH,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        order: Order = "asc",
    ) -> list[Event]:
        return await self._store.read(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=branch,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            order=order,
        )

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        return await self._store.read_last(
            tenant_id=tenant_id, session_id=session_id, branch=branch, n=n
        )

    async def read_ranges(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = DEFAULT_BRANCH,
        ranges: Sequence[SeqRange],
    ) -> list[list[Event]]:
        return await self._store.read_ranges(
            tenant_id=tenant_id, session_id=session_id, branch=branch, ranges=ranges
        )

    async def fork(
        self,
        *,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str = DEFAULT_BRANCH,
        at_seq: int | None = None,
    ) -> Branch:
        return await self._store.fork(
            tenant_id=tenant_id,
            session_id=session_id,
            new_branch=new_branch,
            from_branch=from_branch,
            at_seq=at_seq,
        )

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        return await self._store.list_branches(tenant_id=tenant_id, session_id=session_id)

    async def get_state(self, *, tenant_id: str, session_id: str, branch: str = "main") -> StateDoc:
        return await self._store.get_state(
            tenant_id=tenant_id, session_id=session_id, branch=branch
        )

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
        branch: str = "main",
    ) -> StateDoc:
        return await self._store.put_state(
            tenant_id=tenant_id,
            session_id=session_id,
            data=data,
            expected_version=expected_version,
            branch=branch,
        )

    async def close(self) -> None:
        if self._owns_store:
            await self._store.close()
