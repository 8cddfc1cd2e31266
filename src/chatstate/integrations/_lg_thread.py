"""The decoded view of one LangGraph thread's log, kept by ``ChatstateSaver``.

A thread is one chatstate session; every ``put`` and ``put_writes`` is one ``marker``
event whose ``data["langgraph"]`` holds what it wrote. Serialized values are the saver's
``serde.dumps_typed`` output, base64 in JSON. A list channel (``messages``) whose new
value extends an earlier version is stored as that version plus the new items, so the log
grows with the new messages, not with the whole state at every step.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from chatstate import Event
from chatstate.model import JSONValue

__all__ = [
    "MARK",
    "MISSING",
    "Blob",
    "CheckpointRecord",
    "ThreadView",
    "Typed",
    "pack",
    "session_id_of",
    "unpack",
]

MARK = "langgraph"
Typed = tuple[str, bytes]
Version = str | int | float
_ID = re.compile(r"[A-Za-z0-9._@+-]{1,128}\Z")
MISSING = object()
"""A channel with no stored value at a version."""


def session_id_of(thread_id: str) -> str:
    """The chatstate session id of a thread: itself when it is a valid id, else a hash."""
    if _ID.match(thread_id):
        return thread_id
    return "lg-" + hashlib.sha256(thread_id.encode()).hexdigest()[:40]


def pack(typed: Typed) -> list[JSONValue]:
    return [typed[0], base64.b64encode(typed[1]).decode("ascii")]


def unpack(raw: JSONValue) -> Typed:
    kind, text = cast(list[str], raw)
    return kind, base64.b64decode(text)


@dataclass(slots=True)
class Blob:
    """One channel version: a whole value, nothing (``empty``), or a list that extends
    the version ``base`` with ``items``."""

    whole: Typed | None = None
    base: Version | None = None
    items: list[Typed] = field(default_factory=list)
    empty: bool = False


@dataclass(slots=True)
class CheckpointRecord:
    checkpoint: Typed
    metadata: Typed
    parent: str | None


@dataclass(slots=True)
class ThreadView:
    """Everything a thread's log says, by namespace; ``head`` is the last seq folded in."""

    session_id: str
    head: int = 0
    checkpoints: dict[str, dict[str, CheckpointRecord]] = field(default_factory=dict)
    blobs: dict[tuple[str, str, Version], Blob] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], tuple[str, str, Typed, str]]] = field(
        default_factory=dict
    )

    def fold(self, event: Event) -> None:
        """Add one event of the thread's log."""
        self.head = event.seq
        body = event.data.get(MARK) if event.kind == "marker" else None
        if not isinstance(body, dict):
            return
        ns = str(body.get("ns", ""))
        if body.get("op") == "put":
            self._fold_put(ns, body)
        elif body.get("op") == "writes":
            key = (ns, str(body["cid"]))
            stored = self.writes.setdefault(key, {})
            task, path = str(body["task"]), str(body.get("path", ""))
            for idx, channel, value in cast(list[list[JSONValue]], body["w"]):
                stored[(task, cast(int, idx))] = (task, str(channel), unpack(value), path)

    def _fold_put(self, ns: str, body: Mapping[str, JSONValue]) -> None:
        parent = body.get("parent")
        self.checkpoints.setdefault(ns, {})[str(body["id"])] = CheckpointRecord(
            checkpoint=unpack(body["cp"]),
            metadata=unpack(body["md"]),
            parent=parent if isinstance(parent, str) else None,
        )
        blobs = body.get("blobs")
        for channel, raw in cast(dict[str, dict[str, JSONValue]], blobs or {}).items():
            version = cast(Version, raw["v"])
            if raw.get("empty"):
                blob = Blob(empty=True)
            elif "whole" in raw:
                blob = Blob(whole=unpack(raw["whole"]))
            else:
                items = [unpack(i) for i in cast(list[JSONValue], raw["items"])]
                blob = Blob(base=cast(Version, raw.get("base")), items=items)
            self.blobs[(ns, channel, version)] = blob

    def latest(self, ns: str) -> str | None:
        found = self.checkpoints.get(ns)
        return max(found) if found else None
