"""A list-append history checker in the spirit of Jepsen's Elle, for session logs.

Clients record what they did and what the store answered; the checker compares those
records with the final log of each session and reports every anomaly:

* **lost**: an append the store acknowledged is not in the final log;
* **duplicate**: a value appears more than once in the final log;
* **misplaced**: an acknowledged append is not at the seqs the store reported;
* **not a prefix**: a read returned something that is not a prefix of the final log
  (reordering, a value that was later lost, or one that never existed);
* **stale**: a read that started after an append was acknowledged does not contain it
  (a cache serving an old window). Times are wall-clock nanoseconds from one machine;
* **phantom**: a value in the final log or in a read that no operation appended, or that
  an append the server *refused* (``refused=True``: a 4xx or a 503, which promise nothing
  was written) carried.

Appends that failed with an unknown outcome (a timeout, a lost connection, cancelled after
the grace period) may be in the log or not, but never twice. Pure code: records in, anomalies out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Anomaly", "Op", "check_history", "load_history"]


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation as recorded: an append of ``value`` or a read of the log."""

    kind: Literal["append", "read"]
    session: str
    ok: bool
    value: str | None = None
    """For appends: the unique value appended."""
    seq: int | None = None
    """For acknowledged appends: the seq the store gave it."""
    seen: tuple[str, ...] = ()
    """For reads: the values read, in log order."""
    started: int = 0
    ended: int = 0
    """``time.time_ns()`` before the call and after its answer."""
    refused: bool = False
    """For failed appends: the answer says nothing was written (4xx, 503)."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "session": self.session,
                "ok": self.ok,
                "value": self.value,
                "seq": self.seq,
                "seen": list(self.seen),
                "started": self.started,
                "ended": self.ended,
                "refused": self.refused,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> Op:
        raw = json.loads(line)
        return cls(
            kind=raw["kind"],
            session=raw["session"],
            ok=raw["ok"],
            value=raw["value"],
            seq=raw["seq"],
            seen=tuple(raw["seen"]),
            started=raw["started"],
            ended=raw["ended"],
            refused=bool(raw.get("refused", False)),
        )


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: Literal["lost", "duplicate", "misplaced", "not a prefix", "stale", "phantom"]
    session: str
    detail: str


def load_history(paths: Iterable[Path]) -> list[Op]:
    """The ops recorded in JSONL files; a torn last line (a killed client) is ignored."""
    ops: list[Op] = []
    for path in paths:
        for line in path.read_text().splitlines():
            try:
                ops.append(Op.from_json(line))
            except (ValueError, KeyError):
                continue
    return ops


def check_history(ops: Sequence[Op], final: Mapping[str, Sequence[str]]) -> list[Anomaly]:
    """Every anomaly in ``ops`` against each session's ``final`` log (values in seq order)."""
    anomalies: list[Anomaly] = []
    for session, log in final.items():
        counts = Counter(log)
        for value, n in counts.items():
            if n > 1:
                anomalies.append(Anomaly("duplicate", session, f"{value!r} appears {n} times"))
        position = {value: index + 1 for index, value in enumerate(log)}
        for op in ops:
            if op.session != session:
                continue
            if op.kind == "append" and op.ok and op.value is not None:
                seq = position.get(op.value)
                if seq is None:
                    anomalies.append(Anomaly("lost", session, f"{op.value!r} was acknowledged"))
                elif op.seq is not None and seq != op.seq:
                    anomalies.append(
                        Anomaly(
                            "misplaced", session, f"{op.value!r} acknowledged at {op.seq}, at {seq}"
                        )
                    )
            elif op.kind == "read" and op.ok and tuple(log[: len(op.seen)]) != op.seen:
                anomalies.append(
                    Anomaly("not a prefix", session, f"a read of {len(op.seen)} values diverges")
                )
        mine = [op for op in ops if op.session == session]
        anomalies += _stale_reads(session, mine)
        anomalies += _phantoms(session, mine, log)
    return anomalies


def _phantoms(session: str, ops: list[Op], log: Sequence[str]) -> list[Anomaly]:
    """Values no append wrote (or a refused one carried), in the log or in any read."""
    written = {op.value for op in ops if op.kind == "append" and not op.refused}
    refused = {op.value for op in ops if op.kind == "append" and op.refused} - written
    out: list[Anomaly] = []
    reported: set[str] = set()
    seen_anywhere = [log, *(op.seen for op in ops if op.kind == "read" and op.ok)]
    for values in seen_anywhere:
        for value in values:
            if value in written or value in reported:
                continue
            reported.add(value)
            why = "a refused append carried it" if value in refused else "no append wrote it"
            out.append(Anomaly("phantom", session, f"{value!r} is in the log: {why}"))
    return out


def _stale_reads(session: str, ops: list[Op]) -> list[Anomaly]:
    acked = sorted((op.ended, op.value) for op in ops if op.kind == "append" and op.ok and op.value)
    out: list[Anomaly] = []
    for read in (op for op in ops if op.kind == "read" and op.ok):
        seen = set(read.seen)
        for ended, value in acked:
            if ended >= read.started:
                break
            if value not in seen:
                out.append(Anomaly("stale", session, f"a read missed acknowledged {value!r}"))
                break
    return out
