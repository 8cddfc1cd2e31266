"""In-memory reference backend: the model every other backend is checked against.

Not durable and not shared between processes (see :attr:`capabilities`). It stores each
event's encoded JSON body, exactly as the database backends do, so what it returns has
been through the same codec. Every method runs without awaiting in between, so each call
is atomic on its event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from chatstate.errors import (
    AlreadyExists,
    BranchNotFound,
    IdempotencyMismatch,
    SeqConflict,
    SessionNotFound,
    StateVersionConflict,
)
from chatstate.model import (
    DEFAULT_BRANCH,
    AppendResult,
    Branch,
    Capabilities,
    Event,
    JSONValue,
    NewEvent,
    Page,
    Session,
    StateDoc,
)
from chatstate.store.codec import (
    decode_cursor,
    decode_event,
    dumps,
    encode_appends,
    encode_cursor,
    encode_state,
    fingerprint,
    loads,
)
from chatstate.store.lineage import clip_segments, lineage
from chatstate.store.protocol import Order
from chatstate.store.rules import (
    StoreConfig,
    check_fork,
    check_fork_point,
    check_id,
    check_limit,
    check_metadata,
    check_metadata_filter,
    check_read,
    check_seq,
    check_ttl,
    ensure_live,
    expiry_after,
    metadata_matches,
    new_session_id,
    to_us,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Stored:
    body: str
    created_at: datetime
    token_count: int | None
    idempotency_key: str | None


@dataclass(slots=True)
class _BranchRec:
    info: Branch
    own: list[_Stored] = field(default_factory=list)
    """Events appended to this branch, seq ``base + 1`` onwards."""

    @property
    def base(self) -> int:
        return self.info.fork_seq or 0


@dataclass(slots=True)
class _Idem:
    fingerprint: str
    branch: str
    first_seq: int
    last_seq: int
    created_at: datetime


@dataclass(slots=True)
class _SessionRec:
    session: Session
    branches: dict[str, _BranchRec]
    state: StateDoc = field(default_factory=lambda: StateDoc(version=0, data={}))
    idempotency: dict[str, _Idem] = field(default_factory=dict)


class MemoryStore:
    """A :class:`~chatstate.store.protocol.Store` held in a dict."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        self._config = config or StoreConfig()
        self._sessions: dict[tuple[str, str], _SessionRec] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(durable=False, shared=False)

    # -- sessions -----------------------------------------------------------------------

    def _rec(self, tenant_id: str, session_id: str) -> _SessionRec:
        check_id(tenant_id, "tenant_id")
        check_id(session_id, "session_id")
        rec = self._sessions.get((tenant_id, session_id))
        if rec is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        ensure_live(rec.session, self._config.clock())
        return rec

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
        now = self._config.clock()
        existing = self._sessions.get((tenant_id, session_id))
        if existing is not None:
            if existing.session.expires_at is None or existing.session.expires_at > now:
                raise AlreadyExists(f"session {session_id!r} already exists")
            del self._sessions[(tenant_id, session_id)]  # expired: purge on the way
        session = Session(
            tenant_id=tenant_id,
            id=session_id,
            created_at=now,
            updated_at=now,
            metadata=loads(dumps(dict(metadata or {}))),  # type: ignore[arg-type]
            user_id=user_id,
            ttl_seconds=ttl_seconds,
            expires_at=expiry_after(ttl_seconds, now),
        )
        main = Branch(name=DEFAULT_BRANCH, head_seq=0, created_at=now)
        self._sessions[(tenant_id, session_id)] = _SessionRec(
            session=session, branches={DEFAULT_BRANCH: _BranchRec(main)}
        )
        return session

    async def get_session(self, *, tenant_id: str, session_id: str) -> Session:
        return self._rec(tenant_id, session_id).session

    async def list_sessions(
        self,
        *,
        tenant_id: str,
        user_id: str | None = None,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Session]:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        check_metadata_filter(metadata)
        check_limit(limit, self._config.limits)
        now = self._config.clock()
        after: tuple[int, str] | None = None
        if cursor is not None:
            created, sid = decode_cursor(cursor, (int, str))
            after = (int(created), str(sid))
        rows = sorted(
            (
                rec.session
                for (tenant, _), rec in self._sessions.items()
                if tenant == tenant_id
                and (rec.session.expires_at is None or rec.session.expires_at > now)
                and (user_id is None or rec.session.user_id == user_id)
                and metadata_matches(rec.session.metadata, metadata)
            ),
            key=lambda s: (to_us(s.created_at), s.id),
            reverse=True,
        )
        if after is not None:
            rows = [s for s in rows if (to_us(s.created_at), s.id) < after]
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
        rec = self._rec(tenant_id, session_id)
        now = self._config.clock()
        rec.session = replace(
            rec.session,
            ttl_seconds=ttl_seconds,
            expires_at=expiry_after(ttl_seconds, now),
            updated_at=now,
        )
        return rec.session

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        check_id(tenant_id, "tenant_id")
        check_id(session_id, "session_id")
        if self._sessions.pop((tenant_id, session_id), None) is None:
            raise SessionNotFound(f"session {session_id!r} not found")

    async def delete_sessions(self, *, tenant_id: str, user_id: str | None = None) -> int:
        check_id(tenant_id, "tenant_id")
        if user_id is not None:
            check_id(user_id, "user_id")
        doomed = [
            key
            for key, rec in self._sessions.items()
            if key[0] == tenant_id and (user_id is None or rec.session.user_id == user_id)
        ]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    async def purge_expired(self) -> int:
        now = self._config.clock()
        doomed = [
            key
            for key, rec in self._sessions.items()
            if rec.session.expires_at is not None and rec.session.expires_at <= now
        ]
        for key in doomed:
            del self._sessions[key]
        horizon = to_us(now) - int(self._config.idempotency_ttl_seconds * 1_000_000)
        for rec in self._sessions.values():
            for idem_key, idem in list(rec.idempotency.items()):
                if to_us(idem.created_at) <= horizon:
                    del rec.idempotency[idem_key]
        return len(doomed)

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
            check_id(idempotency_key, "idempotency_key", max_len=255)
        encoded = encode_appends(events, self._config.limits)
        rec = self._rec(tenant_id, session_id)
        target = rec.branches.get(branch)
        if target is None:
            raise BranchNotFound(f"branch {branch!r} not found")
        now = self._config.clock()
        if idempotency_key is not None:
            print_ = fingerprint(branch, encoded)
            idem = rec.idempotency.get(idempotency_key)
            fresh = idem is not None and (
                (now - idem.created_at).total_seconds() < self._config.idempotency_ttl_seconds
            )
            if idem is not None and fresh:
                if idem.fingerprint != print_:
                    raise IdempotencyMismatch(
                        f"idempotency key {idempotency_key!r} was used with another payload"
                    )
                replay = self._events(
                    rec, idem.branch, after_seq=idem.first_seq - 1, before_seq=idem.last_seq + 1
                )
                return AppendResult(
                    branch=idem.branch,
                    first_seq=idem.first_seq,
                    last_seq=idem.last_seq,
                    events=tuple(replay),
                    replayed=True,
                )
        head = target.info.head_seq
        if expected_seq is not None and expected_seq != head:
            raise SeqConflict(
                f"expected seq {expected_seq}, branch {branch!r} is at {head}",
                expected=expected_seq,
                actual=head,
            )
        for item in encoded:
            target.own.append(_Stored(item.body, now, item.event.token_count, idempotency_key))
        first, last = head + 1, head + len(encoded)
        target.info = replace(target.info, head_seq=last)
        if idempotency_key is not None:
            rec.idempotency[idempotency_key] = _Idem(print_, branch, first, last, now)
        rec.session = replace(
            rec.session,
            updated_at=now,
            expires_at=expiry_after(rec.session.ttl_seconds, now),
        )
        written = self._events(rec, branch, after_seq=head, before_seq=last + 1)
        return AppendResult(branch=branch, first_seq=first, last_seq=last, events=tuple(written))

    def _events(
        self,
        rec: _SessionRec,
        branch: str,
        *,
        after_seq: int,
        before_seq: int | None,
        limit: int | None = None,
        order: Order = "asc",
    ) -> list[Event]:
        infos = {name: b.info for name, b in rec.branches.items()}
        out: list[Event] = []
        for seg in clip_segments(lineage(infos, branch), after_seq, before_seq, order):
            owner = rec.branches[seg.branch]
            hi = owner.info.head_seq if seg.hi is None else min(seg.hi, owner.info.head_seq)
            seqs = range(seg.lo, hi + 1)
            for seq in reversed(seqs) if order == "desc" else seqs:
                if limit is not None and len(out) >= limit:
                    return out
                stored = owner.own[seq - owner.base - 1]
                out.append(
                    decode_event(
                        stored.body,
                        seq=seq,
                        branch=seg.branch,
                        created_at=stored.created_at,
                        token_count=stored.token_count,
                        idempotency_key=stored.idempotency_key,
                    )
                )
        return out

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
        rec = self._rec(tenant_id, session_id)
        if branch not in rec.branches:
            raise BranchNotFound(f"branch {branch!r} not found")
        return self._events(
            rec, branch, after_seq=after_seq, before_seq=before_seq, limit=limit, order=order
        )

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = DEFAULT_BRANCH, n: int
    ) -> list[Event]:
        events = await self.read(
            tenant_id=tenant_id, session_id=session_id, branch=branch, limit=n, order="desc"
        )
        events.reverse()
        return events

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
        rec = self._rec(tenant_id, session_id)
        parent = rec.branches.get(from_branch)
        if parent is None:
            raise BranchNotFound(f"branch {from_branch!r} not found")
        if new_branch in rec.branches:
            raise AlreadyExists(f"branch {new_branch!r} already exists")
        at = parent.info.head_seq if at_seq is None else at_seq
        check_fork_point(at, parent.info.head_seq)
        info = Branch(
            name=new_branch,
            head_seq=at,
            created_at=self._config.clock(),
            parent=from_branch,
            fork_seq=at,
        )
        rec.branches[new_branch] = _BranchRec(info)
        return info

    async def list_branches(self, *, tenant_id: str, session_id: str) -> list[Branch]:
        rec = self._rec(tenant_id, session_id)
        return [b.info for b in rec.branches.values()]

    # -- state --------------------------------------------------------------------------

    async def get_state(self, *, tenant_id: str, session_id: str) -> StateDoc:
        return self._rec(tenant_id, session_id).state

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
    ) -> StateDoc:
        check_seq(expected_version, "expected_version")
        body = encode_state(data, self._config.limits)
        rec = self._rec(tenant_id, session_id)
        if rec.state.version != expected_version:
            raise StateVersionConflict(
                f"state is at version {rec.state.version}, not {expected_version}",
                expected=expected_version,
                actual=rec.state.version,
            )
        rec.state = StateDoc(
            version=expected_version + 1,
            data=loads(body),  # type: ignore[arg-type]
            updated_at=self._config.clock(),
        )
        return rec.state

    async def close(self) -> None:
        return None


async def open_memory_url(url: str, config: StoreConfig) -> MemoryStore:
    """``memory://``: a fresh in-process store."""
    return MemoryStore(config)
