"""Branch lineage: which branch's log holds each seq of a branch's view. Pure code.

A branch forked from ``parent`` at ``fork_seq`` sees the parent's view up to ``fork_seq``
and then its own events. Its view is therefore a list of *segments*, each a seq range in
one branch's own log, oldest first. Backends store each event once, in the log of the
branch it was appended to, and read a view segment by segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chatstate.model import Branch, Order, SeqRange

__all__ = ["Segment", "clip_segments", "lineage", "plan_range"]


@dataclass(frozen=True, slots=True)
class Segment:
    """Seqs ``lo..hi`` (inclusive; ``hi=None`` is open-ended) held in ``branch``'s own log."""

    branch: str
    lo: int
    hi: int | None


def lineage(branches: Mapping[str, Branch], name: str) -> list[Segment]:
    """The segments that make up ``name``'s view, oldest first."""
    segments: list[Segment] = []
    hi: int | None = None
    branch = branches[name]
    while True:
        lo = branch.fork_seq + 1 if branch.fork_seq is not None else 1
        if hi is None or lo <= hi:
            segments.append(Segment(branch.name, lo, hi))
        if branch.parent is None or branch.fork_seq is None:
            break
        hi = branch.fork_seq if hi is None else min(hi, branch.fork_seq)
        branch = branches[branch.parent]
    segments.reverse()
    return segments


def clip_segments(
    segments: list[Segment], after_seq: int, before_seq: int | None, order: Order
) -> list[Segment]:
    """Cut the segments to ``after_seq < seq < before_seq``, in the order to read them."""
    out: list[Segment] = []
    for seg in segments:
        lo = max(seg.lo, after_seq + 1)
        hi = seg.hi
        if before_seq is not None:
            hi = before_seq - 1 if hi is None else min(hi, before_seq - 1)
        if hi is None or lo <= hi:
            out.append(Segment(seg.branch, lo, hi))
    if order == "desc":
        out.reverse()
    return out


def owner_of(segments: list[Segment], seq: int) -> str:
    """The branch whose own log holds ``seq`` in this view."""
    for seg in segments:
        if seg.lo <= seq and (seg.hi is None or seq <= seg.hi):
            return seg.branch
    return segments[-1].branch


def plan_range(branches: Mapping[str, Branch], name: str, rng: SeqRange) -> list[Segment]:
    """The closed segments to read for ``rng`` of ``name``'s view, in reading order.

    Each segment's ``hi`` is cut at its owner's head, and empty segments are dropped, so a
    backend fetches each one with the limit that is left (``rng.limit`` minus what it has).
    """
    out: list[Segment] = []
    for seg in clip_segments(lineage(branches, name), rng.after_seq, rng.before_seq, rng.order):
        head = branches[seg.branch].head_seq
        hi = head if seg.hi is None else min(seg.hi, head)
        if seg.lo <= hi:
            out.append(Segment(seg.branch, seg.lo, hi))
    return out
