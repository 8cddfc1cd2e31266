"""Several seq ranges of one branch in one store call, where the store can.

The context engine needs, per build, the retrieved turns: a handful of short seq ranges
scattered over the history. ``read_ranges`` asks the store for all of them at once
through its ``read_ranges`` primitive when it has one (the store front's, planned in
issue 12):

    await store.read_ranges(
        tenant_id=..., session_id=..., branch=..., ranges=[(first_seq, last_seq), ...]
    ) -> list[list[Event]]   # one list per range, in order, inclusive bounds

and otherwise falls back to the existing ``read``: ranges that lie close together are
merged into one read, and the reads run concurrently, so the build waits about one round
trip; the number of calls is then the number of merged ranges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from chatstate.model import Event
from chatstate.store.protocol import Store

__all__ = ["read_ranges"]

_MERGE_GAP = 8
"""Ranges at most this many seqs apart are read together (the events between are cheap)."""
RangesCall = Callable[..., Awaitable[list[list[Event]]]]


async def read_ranges(
    store: Store, key: tuple[str, str, str], ranges: Sequence[tuple[int, int]]
) -> list[list[Event]]:
    """The events of each inclusive ``(first, last)`` range of branch ``key``, in order."""
    if not ranges:
        return []
    tenant_id, session_id, branch = key
    primitive = getattr(store, "read_ranges", None)
    if primitive is not None:
        return await cast(RangesCall, primitive)(
            tenant_id=tenant_id, session_id=session_id, branch=branch, ranges=list(ranges)
        )
    spans: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if spans and lo <= spans[-1][1] + _MERGE_GAP + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    pages = await asyncio.gather(
        *(
            store.read(
                tenant_id=tenant_id,
                session_id=session_id,
                branch=branch,
                after_seq=lo - 1,
                before_seq=hi + 1,
                limit=max(1, hi - lo + 1),
            )
            for lo, hi in spans
        )
    )
    events = [e for page in pages for e in page]
    return [[e for e in events if lo <= e.seq <= hi] for lo, hi in ranges]
