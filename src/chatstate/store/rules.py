"""Rules every backend shares: configuration, limits, id and input validation.

Backends call these before any I/O, so a request is accepted or refused the same way on
every backend. Nothing here does I/O.

**Text policy.** Text round-trips byte for byte, emoji, RTL and combining marks included.
``U+0000`` (NUL) and lone surrogates (``U+D800``..``U+DFFF`` not part of a pair, which
Python can hold but UTF-8 cannot) are **rejected** with :class:`ValidationError` (HTTP 422)
wherever they appear: content, names, tool calls, data, metadata, state. PostgreSQL
``text``/``jsonb`` cannot store them either, so rejecting keeps every backend equal.
Non-finite floats (NaN, Infinity) are rejected too: JSON has no spelling for them.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from chatstate.errors import SessionExpired, ValidationError
from chatstate.model import EVENT_KINDS, ROLES, JSONValue, NewEvent, Session

__all__ = [
    "StoreConfig",
    "StoreLimits",
    "check_id",
    "check_json",
    "check_new_event",
    "check_text",
    "from_us",
    "new_session_id",
    "to_us",
    "utcnow",
]

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*\Z")
ID_MAX = 128
IDEMPOTENCY_KEY_MAX = 255
TOOL_CALL_ID_MAX = 256


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Size limits, enforced with :class:`TooLarge` (413) before anything is written."""

    max_event_bytes: int = 512 * 1024
    """UTF-8 size of one event's stored JSON document."""
    max_append_bytes: int = 4 * 1024 * 1024
    max_events_per_append: int = 1000
    max_metadata_bytes: int = 16 * 1024
    max_state_bytes: int = 1024 * 1024
    max_read_limit: int = 10_000


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Settings every backend takes. ``clock`` exists so tests can move time."""

    limits: StoreLimits = field(default_factory=StoreLimits)
    idempotency_ttl_seconds: float = 48 * 3600
    clock: Callable[[], datetime] = utcnow


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch: how backends store times."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_session_id() -> str:
    """A 32-character id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def check_id(value: object, what: str, *, max_len: int = ID_MAX) -> str:
    """Validate a tenant, session, branch, user id or idempotency key.

    1 to ``max_len`` characters of ``A-Z a-z 0-9 . _ @ + -``, starting with a letter or
    digit. That excludes ``:``, ``{``, ``}``, ``*``, ``?``, ``[``, whitespace and control
    characters, so no id can reach into another tenant's key space or a pattern command.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > max_len or _ID_RE.match(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValidationError(
            f"invalid {what} {shown!r}: use 1-{max_len} of A-Z a-z 0-9 . _ @ + - "
            "starting with a letter or digit"
        )
    return value


def check_text(value: str, where: str) -> None:
    """Refuse NUL and lone surrogates (see the module docstring)."""
    if "\x00" in value:
        raise ValidationError(f"{where}: U+0000 (NUL) is not allowed in text")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{where}: lone surrogate U+{ord(value[exc.start]):04X} is not valid text"
            ) from None


def check_json(value: object, where: str, depth: int = 0) -> None:
    """Check that ``value`` is JSON with valid text everywhere, keys included."""
    if depth > 64:
        raise ValidationError(f"{where}: nested deeper than 64 levels")
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where}: NaN and Infinity are not JSON")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where}: object keys must be strings")
            check_text(key, where)
            check_json(item, where, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_json(item, where, depth + 1)
    else:
        raise ValidationError(f"{where}: {type(value).__name__} is not a JSON value")


def check_metadata_filter(flt: Mapping[str, object] | None) -> None:
    if not flt:
        return
    for key, value in flt.items():
        check_id(key, "metadata filter key", max_len=64)
        if not isinstance(value, str | int | float | bool):
            raise ValidationError("metadata filter values must be strings, numbers or booleans")
        check_json(value, "metadata filter")


def check_ttl(ttl_seconds: float | None) -> None:
    if ttl_seconds is None:
        return
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not 0 < ttl_seconds <= 100 * 365 * 86_400
    ):
        raise ValidationError("ttl_seconds must be a positive number of seconds (at most 100 y)")


def check_seq(value: object, what: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what} must be a non-negative integer")


def check_limit(limit: object, limits: StoreLimits) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit must be a positive integer")
    if limit > limits.max_read_limit:
        raise ValidationError(f"limit must be at most {limits.max_read_limit}")


_MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant"})
_PAYLOAD_KINDS = frozenset({"state", "summary", "marker"})


def check_new_event(event: object, index: int) -> None:
    """Validate one event's shape: kind and role agree, tool fields where they belong."""
    where = f"events[{index}]"
    if not isinstance(event, NewEvent):
        raise ValidationError(f"{where}: expected a NewEvent, got {type(event).__name__}")
    if event.kind not in EVENT_KINDS:
        raise ValidationError(f"{where}: unknown kind {event.kind!r}")
    if event.role is not None and event.role not in ROLES:
        raise ValidationError(f"{where}: unknown role {event.role!r}")
    if event.kind in _PAYLOAD_KINDS:
        if event.role is not None or event.tool_calls or event.tool_call_id is not None:
            raise ValidationError(f"{where}: {event.kind} events carry data, not a role")
    elif event.kind == "message":
        if event.role not in _MESSAGE_ROLES:
            raise ValidationError(f"{where}: a message needs role system/developer/user/assistant")
        if event.tool_calls or event.tool_call_id is not None:
            raise ValidationError(f"{where}: tool fields belong to tool_call/tool_result events")
    elif event.kind == "tool_call":
        if event.role != "assistant" or not event.tool_calls:
            raise ValidationError(f"{where}: a tool_call is an assistant event with tool_calls")
        seen: set[str] = set()
        for call in event.tool_calls:
            _check_tool_call_id(call.id, where)
            if call.id in seen:
                raise ValidationError(f"{where}: tool call id {call.id!r} appears twice")
            seen.add(call.id)
            if not call.name or not isinstance(call.name, str):
                raise ValidationError(f"{where}: a tool call needs a function name")
            if not isinstance(call.arguments, str) or not isinstance(call.type, str):
                raise ValidationError(f"{where}: tool call arguments must be JSON text")
    elif event.kind == "tool_result":
        if event.role != "tool" or event.tool_call_id is None:
            raise ValidationError(f"{where}: a tool_result is a tool event with tool_call_id")
        _check_tool_call_id(event.tool_call_id, where)
        if event.tool_calls:
            raise ValidationError(f"{where}: a tool_result cannot request tool calls")
    content = event.content
    if (
        content is not None
        and not isinstance(content, str)
        and (not isinstance(content, tuple) or not all(isinstance(p, dict) for p in content))
    ):
        raise ValidationError(f"{where}: content must be text or a tuple of part objects")
    if event.name is not None and (not isinstance(event.name, str) or len(event.name) > 256):
        raise ValidationError(f"{where}: name must be text of at most 256 characters")
    if event.token_count is not None and (
        isinstance(event.token_count, bool)
        or not isinstance(event.token_count, int)
        or event.token_count < 0
    ):
        raise ValidationError(f"{where}: token_count must be a non-negative integer")
    if not isinstance(event.data, Mapping) or not isinstance(event.extra, Mapping):
        raise ValidationError(f"{where}: data and extra must be objects")


def _check_tool_call_id(value: object, where: str) -> None:
    if not isinstance(value, str) or not value or len(value) > TOOL_CALL_ID_MAX:
        raise ValidationError(f"{where}: tool call id must be 1-{TOOL_CALL_ID_MAX} characters")


def ensure_live(session: Session, now: datetime) -> Session:
    """Raise :class:`SessionExpired` when the session's expiry has passed."""
    if session.expires_at is not None and session.expires_at <= now:
        raise SessionExpired(f"session {session.id!r} has expired")
    return session


def expiry_after(ttl_seconds: float | None, now: datetime) -> datetime | None:
    return None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)


def check_order(order: object) -> None:
    if order not in ("asc", "desc"):
        raise ValidationError("order must be 'asc' or 'desc'")


def check_fork_point(at: int, head: int) -> None:
    if at > head:
        raise ValidationError(f"cannot fork at seq {at}: the branch head is {head}")


def metadata_matches(
    metadata: Mapping[str, JSONValue], flt: Mapping[str, str | int | float | bool] | None
) -> bool:
    """Exact match of every filter key; ``True`` and ``1`` are different values."""
    if not flt:
        return True
    for key, want in flt.items():
        have = metadata.get(key)
        if have != want or isinstance(have, bool) != isinstance(want, bool):
            return False
    return True


def check_read(
    branch: object,
    after_seq: object,
    before_seq: object,
    limit: object,
    order: object,
    limits: StoreLimits,
) -> None:
    """The arguments of ``Store.read``, checked the same way on every backend."""
    check_id(branch, "branch")
    check_seq(after_seq, "after_seq")
    check_seq(before_seq, "before_seq", allow_none=True)
    check_limit(limit, limits)
    check_order(order)


def check_fork(new_branch: object, from_branch: object, at_seq: object) -> None:
    """The arguments of ``Store.fork``, checked the same way on every backend."""
    check_id(new_branch, "new_branch")
    check_id(from_branch, "from_branch")
    check_seq(at_seq, "at_seq", allow_none=True)
