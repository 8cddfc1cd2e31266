"""How events and cursors become bytes and back. JSON only, never pickle.

Each event is stored as one JSON document (its *body*) carrying ``"v"``, the
:data:`~chatstate.model.EVENT_SCHEMA_VERSION` it was written with. The place of an event in
the log (seq, branch, time, token count, idempotency key) lives in the backend's own
columns or fields and is passed back to :func:`decode_event`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import cast

from chatstate.errors import TooLarge, ValidationError
from chatstate.model import (
    EVENT_KINDS,
    EVENT_SCHEMA_VERSION,
    ROLES,
    Event,
    EventKind,
    JSONValue,
    NewEvent,
    Role,
    ToolCall,
)
from chatstate.store.rules import StoreLimits, check_id, check_json, check_new_event, check_text

__all__ = [
    "EncodedEvent",
    "check_metadata",
    "decode_cursor",
    "decode_event",
    "dumps",
    "encode_appends",
    "encode_cursor",
    "encode_state",
    "fingerprint",
    "loads",
    "unreadable_event",
]


def dumps(value: object) -> str:
    """Compact JSON, UTF-8 text kept as is, NaN refused."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> JSONValue:
    return cast(JSONValue, json.loads(text))


def check_metadata(metadata: Mapping[str, JSONValue] | None, limits: StoreLimits) -> None:
    """Session metadata: an object of short keys and JSON values, at most
    ``max_metadata_bytes`` once encoded (here, beside the encoding it is measured in)."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata must be an object")
    for key in metadata:
        check_id(key, "metadata key", max_len=64)
    check_json(dict(metadata), "metadata")
    if len(dumps(dict(metadata)).encode()) > limits.max_metadata_bytes:
        raise TooLarge(f"metadata is over {limits.max_metadata_bytes} bytes")


class EncodedEvent:
    """A validated event with its stored body, ready for a backend to write."""

    __slots__ = ("body", "doc", "event", "size")

    def __init__(self, event: NewEvent, body: str, size: int, doc: Mapping[str, JSONValue]) -> None:
        self.event = event
        self.body = body
        self.size = size
        self.doc = doc
        """The body as a mapping, for :func:`fingerprint` (never written)."""


def _body(event: NewEvent, index: int) -> dict[str, JSONValue]:
    where = f"events[{index}]"
    doc: dict[str, JSONValue] = {"v": EVENT_SCHEMA_VERSION, "kind": event.kind}
    if event.role is not None:
        doc["role"] = event.role
    content = event.content
    if isinstance(content, str):
        check_text(content, f"{where}.content")
        doc["content"] = content
    elif content is not None:
        parts: list[JSONValue] = [dict(p) for p in content]
        check_json(parts, f"{where}.content")
        doc["content"] = parts
    else:
        doc["content"] = None
    if event.tool_calls:
        calls: list[JSONValue] = []
        for call in event.tool_calls:
            for text in (call.id, call.name, call.arguments, call.type):
                check_text(text, f"{where}.tool_calls")
            calls.append(
                {"id": call.id, "type": call.type, "name": call.name, "arguments": call.arguments}
            )
        doc["tool_calls"] = calls
    if event.tool_call_id is not None:
        check_text(event.tool_call_id, f"{where}.tool_call_id")
        doc["tool_call_id"] = event.tool_call_id
    if event.name is not None:
        check_text(event.name, f"{where}.name")
        doc["name"] = event.name
    if event.data:
        data = dict(event.data)
        check_json(data, f"{where}.data")
        doc["data"] = data
    if event.extra:
        extra = dict(event.extra)
        check_json(extra, f"{where}.extra")
        doc["extra"] = extra
    return doc


def encode_appends(events: Sequence[NewEvent], limits: StoreLimits) -> list[EncodedEvent]:
    """Validate and encode the events of one append, enforcing the size limits."""
    if isinstance(events, NewEvent) or not isinstance(events, Sequence):
        raise ValidationError("events must be a sequence of NewEvent")
    if not events:
        raise ValidationError("an append needs at least one event")
    if len(events) > limits.max_events_per_append:
        raise TooLarge(f"an append takes at most {limits.max_events_per_append} events")
    out: list[EncodedEvent] = []
    total = 0
    for index, event in enumerate(events):
        check_new_event(event, index)
        doc = _body(event, index)
        body = dumps(doc)
        size = len(body.encode("utf-8"))
        if size > limits.max_event_bytes:
            raise TooLarge(
                f"events[{index}] is {size} bytes; the limit is {limits.max_event_bytes}"
            )
        total += size
        out.append(EncodedEvent(event, body, size, doc))
    if total > limits.max_append_bytes:
        raise TooLarge(f"the append is {total} bytes; the limit is {limits.max_append_bytes}")
    return out


def fingerprint(branch: str, encoded: Sequence[EncodedEvent]) -> str:
    """Identity of an append's payload, to tell a replay from a reused idempotency key.

    It covers the target branch and, for each event in order, everything its stored body
    holds: kind, role, content, tool calls, tool_call_id, name, ``data`` and ``extra``.
    Object keys are sorted at every level, so the same payload with its keys in another
    order is the same append. Not covered: ``token_count`` (a tokenizer's estimate, which
    a retry may compute differently) and anything the store assigns (seq, time).
    """
    digest = hashlib.sha256(b"v2\x1f" + branch.encode())
    for item in encoded:
        digest.update(b"\x1e")
        canonical = json.dumps(item.doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        digest.update(canonical.encode("utf-8"))
    return digest.hexdigest()


DECODED_MEMO = 2048
"""Decoded events the process keeps, by stored row (body and place in the log)."""
_MEMO_BODY_MAX = 8192
"""Bodies longer than this (bytes or characters) are decoded afresh, never kept: the memo
holds at most :data:`DECODED_MEMO` x 8 KiB of text (about 5 MB on chat messages of
600 characters)."""


def decode_event(
    body: str | bytes | Mapping[str, JSONValue],
    *,
    seq: int,
    branch: str,
    created_at: datetime,
    token_count: int | None,
    idempotency_key: str | None,
) -> Event:
    """Rebuild an :class:`Event` from its stored body and its place in the log.

    Never raises for what is stored: a body this code cannot use (not JSON, another schema
    version, a wrong type in a field, an unknown kind or role) comes back as an
    *unreadable* event (:func:`unreadable_event`) so that one bad row cannot brick a
    session. Readers leave such events out and say why.

    A stored row never changes (the log is append-only), so a row read again decodes to
    the same event: rows up to 8 KiB are memoised by their body and place (each turn
    reads its window again, and parsing and checking 50 events took about 1 ms of a
    build); each call hands out its own copy of ``data``, ``extra`` and content parts,
    the event's only mutable parts. An erased row is never served from here, since it is
    only found again by reading that very row. A body given as a mapping (PostgreSQL's
    ``jsonb``) is decoded each time.
    """
    place = (seq, branch, created_at, token_count, idempotency_key)
    if not isinstance(body, str | bytes) or len(body) > _MEMO_BODY_MAX:
        return _decode(body, place)
    kept = _decode_memo(body, place)
    # Each reader gets its own data, extra and content parts (the store hands out copies).
    copy = dataclasses.replace(kept, data=_copied(kept.data), extra=_copied(kept.extra))
    if isinstance(kept.content, tuple):
        copy = dataclasses.replace(copy, content=tuple(_copied(part) for part in kept.content))
    return copy


def _copied(value: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """A fresh copy of a decoded JSON object, nested objects and arrays included."""
    return {key: _copy(item) for key, item in value.items()}


def _copy(value: JSONValue) -> JSONValue:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


_Place = tuple[int, str, datetime, int | None, str | None]
"""(seq, branch, created_at, token_count, idempotency_key): a stored row's place."""


def _decode(body: str | bytes | Mapping[str, JSONValue], place: _Place) -> Event:
    try:
        doc = json.loads(body) if isinstance(body, str | bytes) else body
    except (ValueError, UnicodeError):
        doc = None
    if not isinstance(doc, Mapping):
        return unreadable_event(body, "unreadable", "not a JSON object", *place)
    version = doc.get("v")
    if version != EVENT_SCHEMA_VERSION:
        # Version 1 is the only one so far; upgrades of older bodies go here.
        problem = f"schema version {version!r}, this chatstate reads {EVENT_SCHEMA_VERSION}"
        return unreadable_event(body, "unreadable", problem, *place)
    kind = doc.get("kind")
    if kind not in EVENT_KINDS:
        return unreadable_event(body, "unknown kind", f"kind {kind!r}", *place)
    role = doc.get("role")
    if kind in ("message", "tool_call", "tool_result") and role not in ROLES:
        return unreadable_event(body, "unknown role", f"role {role!r}", *place)
    try:
        event = _event(doc, place)
        check_new_event(event.draft(), 0)
    except (ValidationError, KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = "unknown role" if "role" in str(exc) else "unreadable"
        return unreadable_event(body, reason, str(exc).removeprefix("events[0]: "), *place)
    return event


_decode_memo = lru_cache(maxsize=DECODED_MEMO)(_decode)


def _event(
    doc: Mapping[str, JSONValue],
    place: _Place,
) -> Event:
    seq, branch, created_at, token_count, idempotency_key = place
    content = doc.get("content")
    if isinstance(content, list):
        content = tuple(content)  # type: ignore[assignment]
    elif content is not None and not isinstance(content, str):
        raise ValidationError(f"content is a {type(content).__name__}")
    raw_calls = doc.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise ValidationError("tool_calls is not a list")
    calls = []
    for c in raw_calls:
        if not isinstance(c, dict) or not all(
            isinstance(c.get(k), str) for k in ("id", "name", "arguments", "type")
        ):
            raise ValidationError("a tool call is malformed")
        calls.append(
            ToolCall(
                id=cast(str, c["id"]),
                name=cast(str, c["name"]),
                arguments=cast(str, c["arguments"]),
                type=cast(str, c["type"]),
            )
        )
    for key in ("tool_call_id", "name"):
        if doc.get(key) is not None and not isinstance(doc.get(key), str):
            raise ValidationError(f"{key} is not text")
    data = doc.get("data") or {}
    extra = doc.get("extra") or {}
    if not isinstance(data, dict) or not isinstance(extra, dict):
        raise ValidationError("data and extra must be objects")
    # String casts cost nothing at run time; this function runs once per event read.
    return Event(
        seq=seq,
        branch=branch,
        created_at=created_at,
        kind=cast("EventKind", doc["kind"]),
        role=cast("Role | None", doc.get("role")),
        content=cast("str | tuple[dict[str, JSONValue], ...] | None", content),
        tool_calls=tuple(calls),
        tool_call_id=cast("str | None", doc.get("tool_call_id")),
        name=cast("str | None", doc.get("name")),
        data=data,
        extra=extra,
        token_count=token_count,
        idempotency_key=idempotency_key,
        schema_version=EVENT_SCHEMA_VERSION,
    )


def unreadable_event(
    body: object,
    reason: str,
    problem: str,
    seq: int,
    branch: str,
    created_at: datetime,
    token_count: int | None,
    idempotency_key: str | None,
) -> Event:
    """A stored event this code cannot use, kept in its place in the log.

    It is a ``marker`` with :attr:`Event.unreadable` set to the reason (``unreadable``,
    ``unknown kind``, ``unknown role``) and ``data`` holding ``raw`` (the stored body as
    text, verbatim) and ``problem`` (what is wrong with it).
    """
    if isinstance(body, bytes):
        raw = body.decode("utf-8", errors="replace")
    elif isinstance(body, str):
        raw = body
    else:
        try:
            raw = dumps(body)
        except (TypeError, ValueError):
            raw = repr(body)
    return Event(
        seq=seq,
        branch=branch,
        created_at=created_at,
        kind="marker",
        data={"raw": raw, "problem": problem},
        token_count=token_count,
        idempotency_key=idempotency_key,
        unreadable=reason,
    )


def encode_cursor(*parts: str | int) -> str:
    """An opaque paging token (URL-safe base64 of a JSON array)."""
    return base64.urlsafe_b64encode(dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: tuple[type, ...]) -> list[str | int]:
    """Parse a token from :func:`encode_cursor`; anything else is a ``ValidationError``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise ValidationError("invalid cursor") from None
    if (
        not isinstance(value, list)
        or len(value) != len(shape)
        or not all(type(v) is t for v, t in zip(value, shape, strict=True))
    ):
        raise ValidationError("invalid cursor")
    return cast(list[str | int], value)


def encode_state(data: Mapping[str, JSONValue], limits: StoreLimits) -> str:
    """Validate a state document and return its stored JSON text."""
    if not isinstance(data, Mapping):
        raise ValidationError("state data must be an object")
    plain = dict(data)
    check_json(plain, "state")
    body = dumps(plain)
    if len(body.encode()) > limits.max_state_bytes:
        raise TooLarge(f"state document is over {limits.max_state_bytes} bytes")
    return body
