"""The one storage protocol every backend implements.

Semantics shared by every backend (the conformance suite in ``chatstate.testing`` checks
each of them on every backend). :class:`chatstate.store.front.StoreFront` implements this
protocol once over each backend's primitives:

* **Scoping.** Everything is addressed by ``(tenant_id, session_id)``. The same session id
  under two tenants names two unrelated sessions. Ids are validated by
  :func:`chatstate.store.rules.check_id` before any I/O.
* **Log.** Each branch is an append-only list of events numbered ``1, 2, 3, ...`` with no
  gaps. A new session has one branch, ``main``, with head 0. A branch forked at ``fork_seq``
  shows its parent's events ``1..fork_seq`` and then its own, numbered from
  ``fork_seq + 1``; appends to either side never show on the other.
* **Append.** All events of one ``append`` call are written atomically or not at all.
  Order of checks: validation and limits (``ValidationError``/``TooLarge``); session and
  branch exist (``SessionNotFound``/``SessionExpired``/``BranchNotFound``); idempotency
  key (a key seen before with the same payload returns the original ``AppendResult`` with
  ``replayed=True`` and writes nothing; with another payload raises
  ``IdempotencyMismatch``); then ``expected_seq`` (a value other than the head raises
  ``SeqConflict`` and writes nothing). A successful append refreshes the session's
  ``updated_at`` and, when it has a TTL, its ``expires_at``.
* **Idempotency keys** are scoped to the session and kept for ``StoreConfig.idempotency_ttl``
  seconds; after that the same key runs again. "The same payload" is the same branch and
  the same event bodies, object keys in any order (``token_count`` is not compared); see
  :func:`chatstate.store.codec.fingerprint`.
* **Copies.** Every returned value is built from what was stored: mutating a returned
  ``Session``, ``StateDoc`` or ``Event`` changes nothing stored.
* **Expiry.** A session whose ``expires_at`` has passed answers ``SessionExpired`` on every
  call, is left out of listings, and is removed by ``purge_expired``.
* **State document.** One per branch, with its own version: ``put_state(branch=b,
  expected_version=v)`` succeeds only when branch ``b``'s stored version is ``v`` (0 for
  never written) and stores version ``v + 1``. A new branch (a fork) has no document yet
  (version 0, empty), whatever its parent holds: the state keeper folds the fork's log,
  which is its parent's prefix, to the state as it stood at the fork point. A write on one
  branch never shows on another. An unknown branch raises ``BranchNotFound``, as ``read``.
* **Deletion** is hard: events, branches, every branch's state and idempotency records go
  with the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from chatstate.model import (
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

__all__ = ["Order", "Store"]


@runtime_checkable
class Store(Protocol):
    """Async storage of session event logs. All methods take keyword arguments only."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        """Create a session with an empty ``main`` branch. A missing id is generated.

        Raises ``AlreadyExists`` when the id is taken in this tenant.
        """
        ...

    async def get_session(self, *, tenant_id: str, session_id: str) -> Session: ...

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
        """Sessions of a tenant, newest first, filtered by user and exact metadata values.
        ``include_expired``: also the expired sessions not purged yet (erasure uses it)."""
        ...

    async def set_ttl(
        self, *, tenant_id: str, session_id: str, ttl_seconds: float | None
    ) -> Session:
        """Set (or with ``None`` clear) the TTL; ``expires_at`` becomes now + ttl."""
        ...

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        """Hard-delete a session and everything in it. Raises ``SessionNotFound``."""
        ...

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        """Hard-delete all sessions of a tenant, or of one user in it. Returns the count."""
        ...

    async def purge_expired(self) -> int:
        """Hard-delete sessions past their expiry and stale idempotency records."""
        ...

    async def append(
        self,
        *,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str = "main",
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult: ...

    async def read(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = "main",
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        order: Order = "asc",
    ) -> list[Event]:
        """Events with ``after_seq < seq < before_seq`` as the branch sees them.

        ``order="asc"`` returns the oldest ``limit`` of that range first; ``"desc"`` the
        newest first. Page forward with ``after_seq=last.seq``, backward with
        ``before_seq=last.seq`` and ``order="desc"``.
        """
        ...

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = "main", n: int
    ) -> list[Event]:
        """The newest ``n`` events of the branch, oldest first."""
        ...

    async def read_ranges(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = "main",
        ranges: Sequence[SeqRange],
    ) -> list[list[Event]]:
        """Several ranges of one branch, read from one snapshot in one round trip.

        The answer has one list per range, each as ``read`` with that range's arguments
        would return it (so a ``desc`` range comes newest first).
        """
        ...

    async def fork(
        self,
        *,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str = "main",
        at_seq: int | None = None,
    ) -> Branch:
        """Create ``new_branch`` sharing ``from_branch``'s events up to ``at_seq``.

        ``at_seq`` defaults to the current head; it must be between 0 and the head.
        """
        ...

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        """All branches of a session, ``main`` first, then by creation."""
        ...

    async def get_state(self, *, tenant_id: str, session_id: str, branch: str = "main") -> StateDoc:
        """The branch's state document; version 0 and empty when never written."""
        ...

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
        branch: str = "main",
    ) -> StateDoc:
        """Replace the branch's document if its version is ``expected_version``."""
        ...

    async def close(self) -> None: ...
