"""In-memory reference backend: the model every other backend is checked against.

Not durable and not shared between processes (see :attr:`capabilities`). It stores what
the database backends store, encoded: each event's JSON body, the session's metadata and
the state document as JSON text. Every value it returns is built fresh from those, so a
caller mutating a returned object changes nothing stored. Every primitive runs without
awaiting in between, so each call is atomic on its event loop. The rules (validation,
idempotency window, paging) live in :class:`~chatstate.store.front.StoreFront`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from chatstate.errors import AlreadyExists, BranchNotFound, SessionNotFound
from chatstate.model import (
    DEFAULT_BRANCH,
    Branch,
    Capabilities,
    Event,
    SeqRange,
    Session,
    StateDoc,
)
from chatstate.store.codec import decode_event, loads
from chatstate.store.front import (
    Appended,
    AppendPlan,
    IdemRecord,
    MetadataFilter,
    NewSession,
    StoreFront,
    fork_point,
    live_until,
    state_conflict,
)
from chatstate.store.lineage import plan_range
from chatstate.store.rules import StoreConfig, ensure_live, metadata_matches, to_us

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
    state: tuple[int, str, datetime | None] = (0, "{}", None)
    """The branch's state document: version, JSON text, time written."""

    @property
    def base(self) -> int:
        return self.info.fork_seq or 0


@dataclass(slots=True)
class _SessionRec:
    tenant_id: str
    session_id: str
    created_at: datetime
    updated_at: datetime
    metadata_json: str
    user_id: str | None
    ttl_seconds: float | None
    expires_at: datetime | None
    branches: dict[str, _BranchRec]
    idempotency: dict[str, IdemRecord] = field(default_factory=dict)

    def session(self) -> Session:
        """A new :class:`Session`, its metadata decoded afresh."""
        return Session(
            tenant_id=self.tenant_id,
            id=self.session_id,
            created_at=self.created_at,
            updated_at=self.updated_at,
            metadata=loads(self.metadata_json),  # type: ignore[arg-type]
            user_id=self.user_id,
            ttl_seconds=self.ttl_seconds,
            expires_at=self.expires_at,
        )

    def live(self, now: datetime) -> bool:
        return live_until(None if self.expires_at is None else to_us(self.expires_at), now)


class MemoryStore(StoreFront):
    """A :class:`~chatstate.store.protocol.Store` held in a dict."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        super().__init__(config)
        self._sessions: dict[tuple[str, str], _SessionRec] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(durable=False, shared=False)

    def _rec(self, tenant_id: str, session_id: str, now: datetime) -> _SessionRec:
        rec = self._sessions.get((tenant_id, session_id))
        if rec is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        ensure_live(rec.session(), now)
        return rec

    # -- sessions -----------------------------------------------------------------------

    async def _p_create(self, new: NewSession) -> Session:
        key = (new.tenant_id, new.session_id)
        existing = self._sessions.get(key)
        if existing is not None:
            if existing.live(new.now):
                raise AlreadyExists(f"session {new.session_id!r} already exists")
            del self._sessions[key]  # expired: purge on the way
        main = Branch(name=DEFAULT_BRANCH, head_seq=0, created_at=new.now)
        rec = _SessionRec(
            tenant_id=new.tenant_id,
            session_id=new.session_id,
            created_at=new.now,
            updated_at=new.now,
            metadata_json=new.metadata_json,
            user_id=new.user_id,
            ttl_seconds=new.ttl_seconds,
            expires_at=new.expires_at,
            branches={DEFAULT_BRANCH: _BranchRec(main)},
        )
        self._sessions[key] = rec
        return rec.session()

    async def _p_get(self, tenant_id: str, session_id: str, now: datetime) -> Session:
        return self._rec(tenant_id, session_id, now).session()

    async def _p_list(
        self,
        tenant_id: str,
        user_id: str | None,
        metadata: MetadataFilter,
        limit: int,
        after: tuple[int, str] | None,
        now: datetime,
    ) -> list[Session]:
        rows = sorted(
            (
                rec.session()
                for (tenant, _), rec in self._sessions.items()
                if tenant == tenant_id
                and rec.live(now)
                and (user_id is None or rec.user_id == user_id)
            ),
            key=lambda s: (to_us(s.created_at), s.id),
            reverse=True,
        )
        rows = [s for s in rows if metadata_matches(s.metadata, metadata)]
        if after is not None:
            rows = [s for s in rows if (to_us(s.created_at), s.id) < after]
        return rows[:limit]

    async def _p_set_ttl(
        self,
        tenant_id: str,
        session_id: str,
        ttl_seconds: float | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> Session:
        rec = self._rec(tenant_id, session_id, now)
        rec.ttl_seconds, rec.expires_at, rec.updated_at = ttl_seconds, expires_at, now
        return rec.session()

    async def _p_delete(self, tenant_id: str, session_id: str) -> bool:
        return self._sessions.pop((tenant_id, session_id), None) is not None

    async def _p_delete_many(self, tenant_id: str, user_id: str | None) -> int:
        doomed = [
            key
            for key, rec in self._sessions.items()
            if key[0] == tenant_id and (user_id is None or rec.user_id == user_id)
        ]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    async def _p_purge(self, now: datetime, idem_horizon_us: int) -> int:
        doomed = [key for key, rec in self._sessions.items() if not rec.live(now)]
        for key in doomed:
            del self._sessions[key]
        for rec in self._sessions.values():
            for idem_key, idem in list(rec.idempotency.items()):
                if idem.created_us <= idem_horizon_us:
                    del rec.idempotency[idem_key]
        return len(doomed)

    # -- events -------------------------------------------------------------------------

    async def _p_append(self, plan: AppendPlan) -> Appended:
        rec = self._rec(plan.tenant_id, plan.session_id, plan.now)
        target = rec.branches.get(plan.branch)
        head = None if target is None else target.info.head_seq
        idem = None if plan.key is None else rec.idempotency.get(plan.key)
        replay = plan.admit(head, idem)
        if replay is not None:
            rng = SeqRange(
                after_seq=replay.first_seq - 1,
                before_seq=replay.last_seq + 1,
                limit=replay.last_seq - replay.first_seq + 1,
            )
            events = self._events(rec, replay.branch, rng)
            return Appended(replay.first_seq, replay, tuple(events))
        if target is None or head is None:  # pragma: no cover - admit() raised for this
            raise BranchNotFound(f"branch {plan.branch!r} not found")
        for item in plan.rows:
            target.own.append(_Stored(item.body, plan.now, item.event.token_count, plan.key))
        last = head + len(plan.rows)
        target.info = Branch(
            name=target.info.name,
            head_seq=last,
            created_at=target.info.created_at,
            parent=target.info.parent,
            fork_seq=target.info.fork_seq,
        )
        if plan.key is not None:
            rec.idempotency[plan.key] = IdemRecord(
                plan.fingerprint, plan.branch, head + 1, last, plan.now_us
            )
        rec.updated_at, rec.expires_at = plan.now, plan.expires_after(rec.ttl_seconds)
        return Appended(head + 1)

    def _events(self, rec: _SessionRec, branch: str, rng: SeqRange) -> list[Event]:
        infos = {name: b.info for name, b in rec.branches.items()}
        out: list[Event] = []
        for seg in plan_range(infos, branch, rng):
            owner = rec.branches[seg.branch]
            seqs = range(seg.lo, (seg.hi or 0) + 1)
            for seq in reversed(seqs) if rng.order == "desc" else seqs:
                if len(out) >= rng.limit:
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

    async def _p_read(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        ranges: tuple[SeqRange, ...],
        now: datetime,
    ) -> list[list[Event]]:
        rec = self._rec(tenant_id, session_id, now)
        if branch not in rec.branches:
            raise BranchNotFound(f"branch {branch!r} not found")
        return [self._events(rec, branch, rng) for rng in ranges]

    # -- branches -----------------------------------------------------------------------

    async def _p_fork(
        self,
        tenant_id: str,
        session_id: str,
        new_branch: str,
        from_branch: str,
        at_seq: int | None,
        now: datetime,
    ) -> Branch:
        rec = self._rec(tenant_id, session_id, now)
        parent = rec.branches.get(from_branch)
        if parent is None:
            raise BranchNotFound(f"branch {from_branch!r} not found")
        if new_branch in rec.branches:
            raise AlreadyExists(f"branch {new_branch!r} already exists")
        at = fork_point(at_seq, parent.info.head_seq)
        info = Branch(name=new_branch, head_seq=at, created_at=now, parent=from_branch, fork_seq=at)
        rec.branches[new_branch] = _BranchRec(info)
        return info

    async def _p_branches(self, tenant_id: str, session_id: str, now: datetime) -> list[Branch]:
        rec = self._rec(tenant_id, session_id, now)
        return [b.info for b in rec.branches.values()]  # Branch is frozen, no mutable field

    # -- state --------------------------------------------------------------------------

    def _branch(self, tenant_id: str, session_id: str, branch: str, now: datetime) -> _BranchRec:
        found = self._rec(tenant_id, session_id, now).branches.get(branch)
        if found is None:
            raise BranchNotFound(f"branch {branch!r} not found")
        return found

    async def _p_get_state(
        self, tenant_id: str, session_id: str, branch: str, now: datetime
    ) -> StateDoc:
        version, body, updated = self._branch(tenant_id, session_id, branch, now).state
        return StateDoc(version=version, data=loads(body), updated_at=updated)  # type: ignore[arg-type]

    async def _p_put_state(
        self,
        tenant_id: str,
        session_id: str,
        branch: str,
        body: str,
        expected: int,
        now: datetime,
    ) -> StateDoc:
        rec = self._branch(tenant_id, session_id, branch, now)
        if rec.state[0] != expected:
            raise state_conflict(rec.state[0], expected)
        rec.state = (expected + 1, body, now)
        return StateDoc(version=expected + 1, data=loads(body), updated_at=now)  # type: ignore[arg-type]

    async def _p_close(self) -> None:
        return None


async def open_memory_url(url: str, config: StoreConfig) -> MemoryStore:
    """``memory://``: a fresh in-process store."""
    return MemoryStore(config)
