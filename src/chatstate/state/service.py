"""The state layer's one I/O module: :class:`StateKeeper` keeps a session's state document.

After a turn is appended, ``await keeper.sync(session_id)``, off the request path:

1. read the state document and the events after its cursors (only what is new, so the
   cost follows the turn, not the conversation);
2. fold ``state`` events written since (the explicit API, another keeper);
3. run the extractor over the chat messages no earlier batch covered, and append its
   changes as ``state`` events (``data = {"op": ..., ..., "batch_upto": last seq}``)
   with an idempotency key naming the range, so a retried sync writes them once;
4. check each new assistant message for re-asks and contradictions against the state as
   it stood before it (``monitor=True``, the default), keeping the newest flags and a
   count per detector under ``_health`` and returning them in :class:`SyncResult`;
5. fold the changes and ``put_state(expected_version=...)``; on ``StateVersionConflict``
   start again from 1: the log is the source of truth, so the retry folds whatever the
   other writer appended and extracts nothing twice (``batch_upto`` marks what was
   covered).

The explicit API (:meth:`StateKeeper.set_fact`, ``correct_fact``, ``pin_fact``,
``delete_fact``, ``add_commitment``, ``set_commitment``, ``delete_commitment``,
``set_goal``) appends one ``state`` event per change and folds it the same way, so the
document can always be rebuilt from the log with
:func:`~chatstate.state.fold.rebuild_state`.

The keeper keeps one branch's document (``main`` unless it is built with another): it
reads and writes that branch's document and log, and writes its ``state`` events there.
A fork has no document at first (version 0); its keeper's first sync folds the fork's log,
which is its parent's up to the fork point, so it starts from the state as it stood there
and extracts nothing the parent's keeper had already logged by then. Later changes on
either branch never show on the other. :meth:`StateKeeper.on_branch` gives a keeper with
the same settings for another branch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatstate.errors import ChatstateError, IdempotencyMismatch, StateVersionConflict
from chatstate.model import Event, JSONValue, NewEvent, StateDoc
from chatstate.state.changes import Change, CommitmentStatus, Extractor, fact_key
from chatstate.state.fold import apply_all, change_of, empty_state, user_document
from chatstate.state.rules import RuleExtractor

if TYPE_CHECKING:
    from chatstate.health.detectors import Flag
from chatstate.store.protocol import Store

__all__ = ["StateKeeper", "SyncResult"]

log = logging.getLogger(__name__)

_CHAT = frozenset({"message", "tool_call"})


@dataclass(frozen=True, slots=True)
class SyncResult:
    state: StateDoc
    changes: tuple[Change, ...]
    """The changes this call extracted and appended (empty when nothing was new)."""
    state_seqs: tuple[int, ...]
    """Seqs of the ``state`` events this call appended."""
    flags: tuple[Flag, ...] = ()
    """Re-ask and contradiction flags of the assistant messages this call examined."""


def _int(data: dict[str, JSONValue], name: str) -> int:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StateKeeper:
    """Extracts, records and folds one store's session state (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        extractor: Extractor | None = None,
        branch: str = "main",
        max_attempts: int = 8,
        page: int = 500,
        monitor: bool = True,
        chunk: int = 100,
    ) -> None:
        self.store = store
        self.monitor = monitor
        """Check each new assistant message for re-asks and contradictions and keep the
        flags in the document (``_health``) and in :attr:`SyncResult.flags`."""
        self.extractor: Extractor = extractor or RuleExtractor()
        self.branch = branch
        self._attempts = max_attempts
        self._page = page
        self._chunk = max(chunk, 1)
        """Messages extracted per append (see ``_extract_all``)."""

    def on_branch(self, branch: str) -> StateKeeper:
        """This keeper, for ``branch`` (itself when it already keeps that branch)."""
        if branch == self.branch:
            return self
        return StateKeeper(
            self.store,
            extractor=self.extractor,
            branch=branch,
            max_attempts=self._attempts,
            page=self._page,
            monitor=self.monitor,
            chunk=self._chunk,
        )

    async def get(self, session_id: str, *, tenant_id: str = "default") -> StateDoc:
        """The document of the keeper's branch."""
        return await self._get(tenant_id, session_id)

    async def _get(self, tenant_id: str, session_id: str) -> StateDoc:
        return await self.store.get_state(
            tenant_id=tenant_id, session_id=session_id, branch=self.branch
        )

    async def sync(
        self,
        session_id: str,
        *,
        tenant_id: str = "default",
        progress: Callable[[int], None] | None = None,
    ) -> SyncResult:
        """Bring the state document up to the head of the log (see the module docstring).

        ``progress`` is called with the seq reached after each chunk of messages.
        """
        return await self._run(tenant_id, session_id, extract=True, progress=progress)

    # -- the explicit API: each change one state event ----------------------------------

    async def apply(
        self,
        session_id: str,
        changes: Sequence[Change],
        *,
        tenant_id: str = "default",
        idempotency_key: str | None = None,
    ) -> StateDoc:
        """Append ``changes`` as ``state`` events (one append) and fold them in."""
        if changes:
            await self.store.append(
                tenant_id=tenant_id,
                session_id=session_id,
                branch=self.branch,
                events=[NewEvent(kind="state", data=c.to_data()) for c in changes],
                idempotency_key=idempotency_key,
            )
        return (await self._run(tenant_id, session_id, extract=False)).state

    async def replace(
        self,
        session_id: str,
        data: Mapping[str, JSONValue],
        *,
        tenant_id: str = "default",
        expected_version: int | None = None,
    ) -> StateDoc:
        """Replace the user's document (``PUT /state``), recorded as a ``replace`` state
        event so that no later sync or rebuild from the log undoes it; the keeper's cursors
        and health stay. ``expected_version`` makes it conditional
        (:class:`StateVersionConflict` when the document moved)."""
        if expected_version is not None:
            current = await self._get(tenant_id, session_id)
            if current.version != expected_version:
                raise StateVersionConflict(
                    f"state is at version {current.version}, not {expected_version}",
                    expected=expected_version,
                    actual=current.version,
                )
        change = Change(op="replace", document=user_document(data))
        return await self.apply(session_id, [change], tenant_id=tenant_id)

    async def set_fact(
        self,
        session_id: str,
        key: str,
        value: str,
        *,
        tenant_id: str = "default",
        pinned: bool | None = None,
        confidence: float = 1.0,
        idempotency_key: str | None = None,
    ) -> StateDoc:
        change = Change(
            "set_fact", key=fact_key(key), value=value, pinned=pinned, confidence=confidence
        )
        return await self.apply(
            session_id, [change], tenant_id=tenant_id, idempotency_key=idempotency_key
        )

    async def correct_fact(
        self,
        session_id: str,
        key: str,
        value: str,
        *,
        tenant_id: str = "default",
        idempotency_key: str | None = None,
    ) -> StateDoc:
        """Set ``key`` to ``value``, keeping the old value in its history as a correction."""
        change = Change("correct_fact", key=fact_key(key), value=value)
        return await self.apply(
            session_id, [change], tenant_id=tenant_id, idempotency_key=idempotency_key
        )

    async def pin_fact(
        self, session_id: str, key: str, *, tenant_id: str = "default", pinned: bool = True
    ) -> StateDoc:
        """Pinned facts are rendered first, so the context keeps them when space is short."""
        change = Change("pin_fact", key=fact_key(key), pinned=pinned)
        return await self.apply(session_id, [change], tenant_id=tenant_id)

    async def delete_fact(
        self, session_id: str, key: str, *, tenant_id: str = "default"
    ) -> StateDoc:
        """Forget a fact and its history (the change itself stays in the log)."""
        return await self.apply(
            session_id, [Change("delete_fact", key=fact_key(key))], tenant_id=tenant_id
        )

    async def add_commitment(
        self,
        session_id: str,
        text: str,
        *,
        tenant_id: str = "default",
        commitment_id: str | None = None,
        topic: str | None = None,
        status: CommitmentStatus = "active",
        idempotency_key: str | None = None,
    ) -> StateDoc:
        """Record a commitment; its id is ``commitment_id`` or ``c<seq of its event>``."""
        change = Change("add_commitment", key=commitment_id, value=text, topic=topic, status=status)
        return await self.apply(
            session_id, [change], tenant_id=tenant_id, idempotency_key=idempotency_key
        )

    async def set_commitment(
        self,
        session_id: str,
        commitment_id: str,
        status: CommitmentStatus,
        *,
        tenant_id: str = "default",
    ) -> StateDoc:
        change = Change("set_commitment", key=commitment_id, status=status)
        return await self.apply(session_id, [change], tenant_id=tenant_id)

    async def delete_commitment(
        self, session_id: str, commitment_id: str, *, tenant_id: str = "default"
    ) -> StateDoc:
        change = Change("delete_commitment", key=commitment_id)
        return await self.apply(session_id, [change], tenant_id=tenant_id)

    async def set_goal(
        self, session_id: str, goal: str | None, *, tenant_id: str = "default"
    ) -> StateDoc:
        return await self.apply(session_id, [Change("set_goal", value=goal)], tenant_id=tenant_id)

    # -- the loop -------------------------------------------------------------------------

    async def _read_after(self, tenant_id: str, session_id: str, after: int) -> list[Event]:
        out: list[Event] = []
        while page := await self.store.read(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=self.branch,
            after_seq=after,
            limit=self._page,
        ):
            out += page
            after = page[-1].seq
            if len(page) < self._page:
                break
        return out

    async def _run(
        self,
        tenant_id: str,
        session_id: str,
        *,
        extract: bool,
        progress: Callable[[int], None] | None = None,
    ) -> SyncResult:
        written: list[Change] = []
        seqs: list[int] = []
        last_error: ChatstateError | None = None
        flags: list[Flag] = []
        for attempt in range(self._attempts):
            current = await self._get(tenant_id, session_id)
            data = dict(current.data) if current.version else empty_state()
            upto, extracted = _int(data, "_upto"), _int(data, "_extracted")
            after = min(upto, extracted) if extract else upto
            events = await self._read_after(tenant_id, session_id, after)
            covered = extracted
            for event in events:
                if event.kind == "state":
                    covered = max(covered, _int(dict(event.data), "batch_upto"))
            data = apply_all(data, [c for e in events if e.seq > upto if (c := change_of(e))])
            pending = [
                e for e in events if e.seq > covered and e.kind in _CHAT and e.role != "system"
            ]
            if extract and pending:
                try:
                    data, chunk_flags = await self._extract_all(
                        tenant_id, session_id, pending, data, written, seqs, events, progress
                    )
                except IdempotencyMismatch as exc:  # another keeper wrote this range differently
                    last_error = exc
                    continue
                if self.monitor:
                    flags = chunk_flags
            if flags:  # again on a retry: the document was read afresh
                _record_flags(data, flags)
            if events:
                data["_upto"] = max(upto, events[-1].seq)
                if extract:  # every event read was extracted, or covered, or not chat
                    data["_extracted"] = max(extracted, events[-1].seq)
            if data == current.data:
                return SyncResult(current, tuple(written), tuple(seqs), tuple(flags))
            try:
                doc = await self.store.put_state(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    branch=self.branch,
                    data=data,
                    expected_version=current.version,
                )
            except StateVersionConflict as exc:
                last_error = exc
                log.debug("state of %s changed under us (attempt %d)", session_id, attempt + 1)
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            return SyncResult(doc, tuple(written), tuple(seqs), tuple(flags))
        log.warning("state of %s kept changing; gave up after %d tries", session_id, self._attempts)
        raise last_error or ChatstateError("state sync made no attempt")

    async def _extract_all(
        self,
        tenant_id: str,
        session_id: str,
        pending: list[Event],
        data: dict[str, JSONValue],
        written: list[Change],
        seqs: list[int],
        events: list[Event],
        progress: Callable[[int], None] | None,
    ) -> tuple[dict[str, JSONValue], list[Flag]]:
        """Extract from ``pending`` in chunks of ``chunk`` messages, each appended on its
        own with its own ``batch_upto``: a long log (an import of 50,000 messages) never
        makes one append over the store's limit, and a retry resumes after the last chunk
        written. Returns the state with the changes folded in, and the flags."""
        flags: list[Flag] = []
        for start in range(0, len(pending), self._chunk):
            part = pending[start : start + self._chunk]
            appended = await self._extract(tenant_id, session_id, part, data)
            batch = [c for e in appended if (c := change_of(e))]
            if self.monitor:
                flags += _check(part, data, batch)
            if appended:
                written += batch
                seqs += [e.seq for e in appended]
                data = apply_all(data, batch)
                events += appended
            if progress is not None:
                progress(part[-1].seq)
        return data, flags

    async def _extract(
        self, tenant_id: str, session_id: str, pending: list[Event], data: dict[str, JSONValue]
    ) -> list[Event]:
        changes = await self.extractor.extract(events=pending, state=data)
        if not changes:
            return []
        last = pending[-1].seq
        result = await self.store.append(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=self.branch,
            events=[
                NewEvent(kind="state", data={**c.to_data(), "batch_upto": last}) for c in changes
            ],
            idempotency_key=f"state-{self.branch}-{pending[0].seq}-{last}",
        )
        return list(result.events)


MAX_STORED_FLAGS = 50


def _check(events: list[Event], state: dict[str, JSONValue], changes: list[Change]) -> list[Flag]:
    # chatstate.health builds on chatstate.state; importing it at module level would make
    # the two packages import each other.
    from chatstate.health.report import check_turns  # noqa: PLC0415

    return check_turns(events, state, changes)


def _record_flags(data: dict[str, JSONValue], flags: list[Flag]) -> None:
    """Keep the newest flags and a count per detector under ``_health``."""
    health = data.get("_health")
    kept = dict(health) if isinstance(health, dict) else {}
    stored = kept.get("flags")
    items: list[JSONValue] = list(stored) if isinstance(stored, list) else []
    counts = kept.get("counts")
    totals: dict[str, JSONValue] = dict(counts) if isinstance(counts, dict) else {}
    seen = {(i.get("detector"), i.get("seq")) for i in items if isinstance(i, dict)}
    for flag in flags:
        if (flag.detector, flag.seq) in seen:
            continue
        items.append(flag.to_dict())
        total = totals.get(flag.detector)
        totals[flag.detector] = (total if isinstance(total, int) else 0) + 1
    data["_health"] = {"flags": items[-MAX_STORED_FLAGS:], "counts": totals}
