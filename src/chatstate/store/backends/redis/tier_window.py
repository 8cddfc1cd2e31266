"""What the Redis hot tier (:mod:`.tiered`) keeps of a window and how it checks it: the
entry codec, the validator a window is checked against, pages cut from a window, the
tier's counters, and the start-up probe of the cache server's persistence.

**Why (validator, head) is a generation.** A cached window of branch ``b`` holds events
``low..head`` of ``b``'s view. The system of record's log is append-only and dense: once
event ``seq`` of a branch exists it never changes, and a branch whose head is ``h`` holds
exactly ``1..h``. Branches are never deleted or renamed inside a session; a session is
deleted whole. So the events of ``b`` up to ``h`` are fixed by the *incarnation* of ``b``
and ``h``. The incarnation is told by the branch's ``created_at`` (whole microseconds,
from the store's clock): every branch of a session re-created under an old id is created
after the old session was deleted, so later than every branch of the old one. Two
incarnations share a ``created_at`` only if the clock reads the same microsecond across a
delete and a create (a frozen test clock; a clock stepped back onto that exact value).

Hence a window whose ``(validator, head)`` equals the system of record's ``(created_us,
head_seq)`` of that branch, read during the call, holds exactly what the system of record
holds; anything else (a snapshot restored into the cache, an update lost on the way, a
failover to a lagging replica, a write made around the tier) does not match and is
refilled. Appends change the head, forks add branches with their own validator, deletes
make the session unknown: each changes what the check compares, which is what a
per-session generation would do, without a column or a migration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from redis.exceptions import ResponseError

from chatstate.errors import ChatstateError
from chatstate.model import Branch, Event
from chatstate.store.backends.redis.conn import DRIVER_ERRORS, RedisClient
from chatstate.store.codec import decode_event, dumps, encode_appends, loads
from chatstate.store.protocol import Order
from chatstate.store.rules import StoreLimits, from_us, to_us

__all__ = [
    "TierStats",
    "cache_persists",
    "decode_entry",
    "decode_page",
    "encode_entry",
    "page_of",
    "unwrap",
    "validator",
]

_T = TypeVar("_T")
log = logging.getLogger("chatstate.store.tiered")


@dataclass(slots=True)
class TierStats:
    """Counters of one :class:`~.tiered.TieredStore` (reads that reached the cache).

    ``hits``: answered from a window the system of record confirmed. ``misses``: no usable
    window; filled. ``stale``: a window was there but did not match the system of record
    (a restored or out-of-date cache, or a write still on its way to it); discarded and
    refilled, never served. ``erased``: cache entries of a deleted or expired session
    found on a read and erased.
    """

    hits: int = 0
    misses: int = 0
    stale: int = 0
    erased: int = 0


def validator(branch: Branch) -> str:
    """The value a window of ``branch`` is filled with and checked against."""
    return str(to_us(branch.created_at))


def encode_entry(limits: StoreLimits, tenant_id: str, session_id: str, event: Event) -> str:
    """One event as the tier stores it; raises ``ChatstateError`` for an event the codec
    refuses today (such a window is served but not cached). A stored event that cannot
    be read is cached as it is stored (its raw body), so it reads back unreadable, with
    its reason, and not as the marker that stands in for it."""
    raw = event.data.get("raw") if event.unreadable is not None else None
    body = raw if isinstance(raw, str) else encode_appends([event.draft()], limits)[0].body
    return dumps(
        [
            tenant_id,
            session_id,
            event.seq,
            event.branch,
            to_us(event.created_at),
            event.token_count,
            event.idempotency_key,
            body,
        ]
    )


def decode_entry(raw: str, tenant_id: str, session_id: str, seq: int) -> Event:
    doc = loads(raw)
    if not isinstance(doc, list) or len(doc) != 8:
        raise ChatstateError("malformed cache entry")
    tenant, session, r_seq, branch, created, tokens, key, body = doc
    if tenant != tenant_id or session != session_id:
        log.error("redis cache returned another session's event; refusing it")
        raise ChatstateError("the cache returned another session's data; refusing it")
    if r_seq != seq:
        raise ChatstateError("cache entry at the wrong position")
    return decode_event(
        cast(str, body),
        seq=seq,
        branch=cast(str, branch),
        created_at=from_us(cast(int, created)),
        token_count=cast(int | None, tokens),
        idempotency_key=cast(str | None, key),
    )


def decode_page(
    raws: Sequence[str | None], first: int, tenant_id: str, session_id: str, order: Order
) -> list[Event] | None:
    """The events of a confirmed hit, seqs ``first, first + 1, ...``; ``None`` when an
    entry is missing (the store answers)."""
    if any(raw is None for raw in raws):
        return None
    events = [
        decode_entry(cast(str, raw), tenant_id, session_id, seq)
        for seq, raw in enumerate(raws, start=first)
    ]
    if order == "desc":
        events.reverse()
    return events


def page_of(
    window: Sequence[Event], after_seq: int, limit: int, order: Order
) -> list[Event] | None:
    """The page ``read(after_seq, limit, order)`` cut from a branch's newest events;
    ``None`` when the page reaches below them."""
    head = window[-1].seq if window else 0
    low = window[0].seq if window else 1
    lo = after_seq + 1
    if lo > head:
        return []
    bottom = max(lo, head - limit + 1) if order == "desc" else lo
    if bottom < low:
        return None
    if order == "desc":
        return [e for e in reversed(window) if e.seq >= bottom]
    return [e for e in window if e.seq >= lo][:limit]


def unwrap(outcome: _T | BaseException) -> _T:
    """One result of ``gather(..., return_exceptions=True)``, or its error raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def cache_persists(client: RedisClient) -> bool | None:
    """Whether the cache server keeps data across a restart: ``None`` when it cannot be
    reached (ask again later), ``True`` when it forbids ``CONFIG`` (assume the worst)."""
    try:
        settings: dict[str, str] = {}
        for name in ("appendonly", "save"):
            got = cast(dict[str, str], await client.config_get(name))
            settings[name] = got.get(name, "")
    except ResponseError:
        return True
    except DRIVER_ERRORS:
        return None
    return settings["appendonly"] == "yes" or bool(settings["save"])
