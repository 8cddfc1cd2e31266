"""The backend side of the store front: the primitives a backend implements, and the
values the front hands them. No I/O here.

A backend subclasses :class:`~chatstate.store.front.StoreFront` (which subclasses
:class:`Primitives`) and overrides every ``_p_*`` method. The front has already validated
and encoded every argument; ``now`` is the front's one clock reading for the call, in whole
microseconds. Each primitive is one transaction (or one atomic script) and returns values
built from what it stored, never an object the backend keeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from chatstate.errors import (
    BranchNotFound,
    IdempotencyMismatch,
    SeqConflict,
    StateVersionConflict,
)
from chatstate.model import Branch, Capabilities, Event, SeqRange, Session, StateDoc
from chatstate.store.codec import EncodedEvent
from chatstate.store.rules import StoreConfig, check_fork_point, expiry_after, from_us, to_us

__all__ = [
    "AppendPlan",
    "Appended",
    "IdemRecord",
    "MetadataFilter",
    "NewSession",
    "Primitives",
    "exact",
    "fork_point",
    "live_until",
    "state_conflict",
]

MetadataFilter = Mapping[str, str | int | float | bool]


def exact(moment: datetime) -> datetime:
    """``moment`` as every backend stores it: UTC, whole microseconds."""
    return from_us(to_us(moment))


def live_until(expires_us: int | None, now: datetime) -> bool:
    """The expiry rule: a session is live while ``now`` is before its expiry."""
    return expires_us is None or expires_us > to_us(now)


def fork_point(at_seq: int | None, head: int) -> int:
    """Where a fork starts: ``at_seq``, by default the parent's head, never past it."""
    at = head if at_seq is None else at_seq
    check_fork_point(at, head)
    return at


def state_conflict(actual: int, expected: int) -> StateVersionConflict:
    return StateVersionConflict(
        f"state is at version {actual}, not {expected}", expected=expected, actual=actual
    )


@dataclass(frozen=True, slots=True)
class NewSession:
    """A validated session to insert."""

    tenant_id: str
    session_id: str
    user_id: str | None
    metadata_json: str
    ttl_seconds: float | None
    expires_at: datetime | None
    now: datetime


@dataclass(frozen=True, slots=True)
class IdemRecord:
    """What an idempotency key remembers of the append that first used it."""

    fingerprint: str
    branch: str
    first_seq: int
    last_seq: int
    created_us: int


@dataclass(frozen=True, slots=True)
class Appended:
    """A backend's answer to ``_p_append``: where it wrote, or the append to replay."""

    first_seq: int
    replay: IdemRecord | None = None
    replayed_events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """One validated, encoded append, with the rule that admits it."""

    tenant_id: str
    session_id: str
    branch: str
    rows: tuple[EncodedEvent, ...]
    expected_seq: int | None
    key: str | None
    fingerprint: str
    """Of ``branch`` and the rows (see :func:`~chatstate.store.codec.fingerprint`); ``""``
    without a key."""
    now: datetime
    horizon_us: int
    """The idempotency window: a record created at or before this time is void."""

    @property
    def now_us(self) -> int:
        return to_us(self.now)

    @property
    def last_offset(self) -> int:
        return len(self.rows)

    def admit(self, head: int | None, idem: IdemRecord | None) -> IdemRecord | None:
        """The append's checks after the session lookup, in the contract's order.

        ``head`` is the branch's head (``None``: no such branch); ``idem`` the record
        stored under the key, if any. Returns the record to replay, or ``None`` to write
        ``rows`` at ``head + 1``. Raises ``BranchNotFound``, ``IdempotencyMismatch`` or
        ``SeqConflict``. A backend calls this inside its write transaction (the Redis
        backend's Lua script states the same order; see its divergence note).
        """
        if head is None:
            raise BranchNotFound(f"branch {self.branch!r} not found")
        if idem is not None and self.key is not None and idem.created_us > self.horizon_us:
            if idem.fingerprint != self.fingerprint:
                raise self.mismatch()
            return idem
        if self.expected_seq is not None and self.expected_seq != head:
            raise self.conflict(head)
        return None

    def mismatch(self) -> IdempotencyMismatch:
        return IdempotencyMismatch(f"idempotency key {self.key!r} was used with another payload")

    def conflict(self, head: int) -> SeqConflict:
        expected = self.expected_seq if self.expected_seq is not None else head
        return SeqConflict(
            f"expected seq {expected}, branch {self.branch!r} is at {head}",
            expected=expected,
            actual=head,
        )

    def expires_after(self, ttl_seconds: float | None) -> datetime | None:
        """The session's new expiry after this append (a TTL slides with each append)."""
        return expiry_after(ttl_seconds, self.now)


class Primitives(ABC):
    """What a backend implements. Each method's contract is in its docstring or in
    :mod:`chatstate.store.front`'s module docstring. The methods are abstract: a backend
    that misses one cannot be constructed (a ``TypeError`` naming it), instead of failing
    at the first call."""

    _config: StoreConfig

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    async def _p_create(self, new: NewSession) -> Session: ...

    @abstractmethod
    async def _p_get(self, tenant_id: str, session_id: str, now: datetime) -> Session: ...

    @abstractmethod
    async def _p_list(
        self,
        tenant_id: str,
        user_id: str | None,
        metadata: MetadataFilter,
        limit: int,
        after: tuple[int, str] | None,
        now: datetime,
    ) -> list[Session]: ...

    @abstractmethod
    async def _p_set_ttl(
        self,
        tenant_id: str,
        session_id: str,
        ttl_seconds: float | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> Session: ...

    @abstractmethod
    async def _p_delete(self, tenant_id: str, session_id: str) -> bool: ...

    @abstractmethod
    async def _p_delete_many(self, tenant_id: str, user_id: str | None) -> int: ...

    @abstractmethod
    async def _p_purge(self, now: datetime, idem_horizon_us: int) -> int: ...

    @abstractmethod
    async def _p_append(self, plan: AppendPlan) -> Appended: ...

    @abstractmethod
    async def _p_read(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        ranges: tuple[SeqRange, ...],
        now: datetime,
    ) -> list[list[Event]]: ...

    @abstractmethod
    async def _p_fork(
        self,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str,
        at_seq: int | None,
        now: datetime,
    ) -> Branch: ...

    @abstractmethod
    async def _p_branches(self, tenant_id: str, session_id: str, now: datetime) -> list[Branch]: ...

    @abstractmethod
    async def _p_get_state(
        self, tenant_id: str, session_id: str, branch: str, now: datetime
    ) -> StateDoc:
        """The branch's document (version 0, empty, when none); ``BranchNotFound`` for an
        unknown branch, checked after the session."""
        ...

    @abstractmethod
    async def _p_put_state(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        body: str,
        expected: int,
        now: datetime,
    ) -> StateDoc:
        """In one transaction: the session, the branch (``BranchNotFound``), then the
        version check (:func:`state_conflict`) and the write of ``expected + 1``."""
        ...

    @abstractmethod
    async def _p_close(self) -> None: ...
