"""The store's front: every rule of the storage contract, written once.

:class:`StoreFront` implements the public :class:`~chatstate.store.protocol.Store` API.
It validates arguments (always in the same order), encodes events and state, computes the
idempotency fingerprint and the idempotency window, pages listings, and answers
``read_last`` and ``read_ranges``. A backend subclasses it and implements only the
*primitives* below, which take validated, encoded values and do I/O.

The primitives (all ``async``; ``now`` is the front's clock reading, whole microseconds):

* ``_p_create(new)``: insert a session with an empty ``main`` branch in one transaction;
  an existing live session of that id raises ``AlreadyExists``, an expired one is deleted
  first (see :func:`live_until`).
* ``_p_get(tenant, sid, now)``, ``_p_set_ttl(tenant, sid, ttl, expires, now)``.
* ``_p_list(tenant, user, metadata, limit, after, now)``: live sessions, newest first,
  strictly below the ``after`` key ``(created_us, session_id)``, at most ``limit``.
* ``_p_delete(tenant, sid)`` -> whether it existed; ``_p_delete_many(tenant, user)``.
* ``_p_purge(now, idem_horizon_us)``.
* ``_p_append(plan)``: in one transaction, look up the session, the branch head and the
  idempotency record, hand them to :meth:`AppendPlan.admit` (which raises or says what to
  do), and write. Returns :class:`Appended`.
* ``_p_read(tenant, sid, branch, ranges, now)``: one snapshot; each range read with the
  segments of :func:`~chatstate.store.lineage.plan_range`.
* ``_p_fork``, ``_p_branches``, ``_p_close``.
* ``_p_get_state(tenant, sid, branch, now)``, ``_p_put_state(tenant, sid, branch, body,
  expected, now)``: the branch's own document, keyed by (tenant, session, branch).

Every primitive returns values built from what it stored (decoded JSON, new objects), never
an object the backend keeps: a caller that mutates a returned value changes nothing stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from chatstate.errors import (
    SessionNotFound,
    ValidationError,
)
from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Event,
    JSONValue,
    NewEvent,
    Order,
    Page,
    SeqRange,
    Session,
    StateDoc,
)
from chatstate.store.codec import (
    check_metadata,
    decode_cursor,
    decode_event,
    dumps,
    encode_appends,
    encode_cursor,
    encode_state,
    fingerprint,
)
from chatstate.store.primitives import (
    Appended,
    AppendPlan,
    IdemRecord,
    MetadataFilter,
    NewSession,
    Primitives,
    exact,
    fork_point,
    live_until,
    state_conflict,
)
from chatstate.store.protocol import Store
from chatstate.store.rules import (
    IDEMPOTENCY_KEY_MAX,
    StoreConfig,
    check_fork,
    check_id,
    check_limit,
    check_metadata_filter,
    check_read,
    check_seq,
    check_ttl,
    expiry_after,
    new_session_id,
    to_us,
)

__all__ = [
    "MAX_RANGES",
    "AppendPlan",
    "Appended",
    "IdemRecord",
    "MetadataFilter",
    "NewSession",
    "Primitives",
    "StoreFront",
    "exact",
    "fork_point",
    "live_until",
    "read_last_via",
    "state_conflict",
]

MAX_RANGES = 32
"""Most ranges one ``read_ranges`` call may ask for."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreFront(Primitives):
    """The public store API over a backend's primitives. Subclass it; see the module."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        self._config = config or StoreConfig()

    @property
    def config(self) -> StoreConfig:
        return self._config

    def _now(self) -> datetime:
        return exact(self._config.clock())

    # -- sessions -----------------------------------------------------------------------

    async def create_session(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        ttl_seconds: float | None = None,
    ) -> Session:
        check_id(tenant_id, "tenant_id")
        session_id = new_session_id() if session_id is None else check_id(session_id, "session_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        check_metadata(metadata, self._config.limits)
        check_ttl(ttl_seconds)
        now = self._now()
        new = NewSession(
            tenant_id=tenant_id,
            session_id=session_id,
            user_id=user_id,
            metadata_json=dumps(dict(metadata or {})),
            ttl_seconds=ttl_seconds,
            expires_at=expiry_after(ttl_seconds, now),
            now=now,
        )
        return await self._p_create(new)

    async def get_session(self, *, tenant_id: str, session_id: str) -> Session:
        _ids(tenant_id, session_id)
        return await self._p_get(tenant_id, session_id, self._now())

    async def list_sessions(
        self,
        *,
        tenant_id: str,
        user_id: str | None = None,
        metadata: MetadataFilter | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_expired: bool = False,
    ) -> Page[Session]:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        check_metadata_filter(metadata)
        check_limit(limit, self._config.limits)
        after: tuple[int, str] | None = None
        if cursor is not None:
            created, sid = decode_cursor(cursor, (int, str))
            after = (int(created), str(sid))
        now = _EPOCH if include_expired else self._now()  # every expiry is after the epoch
        rows = await self._p_list(tenant_id, user_id, metadata or {}, limit + 1, after, now)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(to_us(last.created_at), last.id)
        return Page(items=tuple(page), next_cursor=next_cursor)

    async def set_ttl(
        self, *, tenant_id: str, session_id: str, ttl_seconds: float | None
    ) -> Session:
        check_ttl(ttl_seconds)
        _ids(tenant_id, session_id)
        now = self._now()
        expires = expiry_after(ttl_seconds, now)
        return await self._p_set_ttl(tenant_id, session_id, ttl_seconds, expires, now)

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        _ids(tenant_id, session_id)
        if not await self._p_delete(tenant_id, session_id):
            raise SessionNotFound(f"session {session_id!r} not found")

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        return await self._p_delete_many(tenant_id, user_id)

    async def purge_expired(self) -> int:
        now = self._now()
        return await self._p_purge(now, self._idem_horizon(now))

    def _idem_horizon(self, now: datetime) -> int:
        return to_us(now) - int(self._config.idempotency_ttl_seconds * 1_000_000)

    # -- events -------------------------------------------------------------------------

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
        check_id(branch, "branch")
        check_seq(expected_seq, "expected_seq", allow_none=True)
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key", max_len=IDEMPOTENCY_KEY_MAX)
        encoded = encode_appends(events, self._config.limits)
        _ids(tenant_id, session_id)
        now = self._now()
        plan = AppendPlan(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=branch,
            rows=tuple(encoded),
            expected_seq=expected_seq,
            key=idempotency_key,
            fingerprint="" if idempotency_key is None else fingerprint(branch, encoded),
            now=now,
            horizon_us=self._idem_horizon(now),
        )
        done = await self._p_append(plan)
        if done.replay is not None:
            rec = done.replay
            return AppendResult(
                branch=rec.branch,
                first_seq=rec.first_seq,
                last_seq=rec.last_seq,
                events=done.replayed_events,
                replayed=True,
            )
        first = done.first_seq
        written = tuple(
            decode_event(
                item.body,
                seq=first + i,
                branch=branch,
                created_at=now,
                token_count=item.event.token_count,
                idempotency_key=idempotency_key,
            )
            for i, item in enumerate(encoded)
        )
        return AppendResult(
            branch=branch, first_seq=first, last_seq=first + len(encoded) - 1, events=written
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
        check_read(branch, after_seq, before_seq, limit, order, self._config.limits)
        _ids(tenant_id, session_id)
        rng = SeqRange(after_seq=after_seq, before_seq=before_seq, limit=limit, order=order)
        return (await self._p_read(tenant_id, session_id, branch, (rng,), self._now()))[0]

    async def read_ranges(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = DEFAULT_BRANCH,
        ranges: Sequence[SeqRange],
    ) -> list[list[Event]]:
        check_ranges(branch, ranges, self)
        _ids(tenant_id, session_id)
        if not ranges:
            return []
        return await self._p_read(tenant_id, session_id, branch, tuple(ranges), self._now())

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        return await read_last_via(self, tenant_id, session_id, branch, n)

    # -- branches -----------------------------------------------------------------------

    async def fork(
        self,
        *,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str = DEFAULT_BRANCH,
        at_seq: int | None = None,
    ) -> Branch:
        check_fork(new_branch, from_branch, at_seq)
        _ids(tenant_id, session_id)
        return await self._p_fork(
            tenant_id, session_id, new_branch, from_branch, at_seq, self._now()
        )

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        _ids(tenant_id, session_id)
        return await self._p_branches(tenant_id, session_id, self._now())

    # -- state --------------------------------------------------------------------------

    async def get_state(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH
    ) -> StateDoc:
        _ids(tenant_id, session_id)
        check_id(branch, "branch")
        return await self._p_get_state(tenant_id, session_id, branch, self._now())

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
        branch: str = DEFAULT_BRANCH,
    ) -> StateDoc:
        check_seq(expected_version, "expected_version")
        body = encode_state(data, self._config.limits)
        _ids(tenant_id, session_id)
        check_id(branch, "branch")
        return await self._p_put_state(
            tenant_id, session_id, branch, body, expected_version, self._now()
        )

    async def close(self) -> None:
        await self._p_close()


def _ids(tenant_id: str, session_id: str) -> None:
    check_id(tenant_id, "tenant_id")
    check_id(session_id, "session_id")


def check_ranges(branch: object, ranges: object, front: StoreFront) -> None:
    """The arguments of ``read_ranges``: each range checked as ``read`` checks its own."""
    if isinstance(ranges, SeqRange) or not isinstance(ranges, Sequence):
        raise ValidationError("ranges must be a sequence of SeqRange")
    if len(ranges) > MAX_RANGES:
        raise ValidationError(f"read_ranges takes at most {MAX_RANGES} ranges")
    check_id(branch, "branch")
    for rng in ranges:
        if not isinstance(rng, SeqRange):
            raise ValidationError("ranges must be a sequence of SeqRange")
        check_read(branch, rng.after_seq, rng.before_seq, rng.limit, rng.order, front.config.limits)


async def read_last_via(
    store: Store, tenant_id: str, session_id: str, branch: str, n: int
) -> list[Event]:
    """``read_last`` in terms of ``read``: the newest ``n``, oldest first."""
    events = await store.read(
        tenant_id=tenant_id, session_id=session_id, branch=branch, limit=n, order="desc"
    )
    events.reverse()
    return events
