"""The value objects of a conversation: sessions, branches, events and the state document.

All are frozen dataclasses. Events are stored as one JSON document each, carrying
``schema_version`` so that a future release can still read what this one wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeAlias, TypeVar

__all__ = [
    "EVENT_KINDS",
    "EVENT_SCHEMA_VERSION",
    "ROLES",
    "AppendResult",
    "Branch",
    "Capabilities",
    "ContentPart",
    "Event",
    "EventKind",
    "JSONValue",
    "NewEvent",
    "Order",
    "Page",
    "Role",
    "SeqRange",
    "Session",
    "StateDoc",
    "ToolCall",
]

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None
"""Any value that JSON can carry."""

ContentPart: TypeAlias = dict[str, JSONValue]
"""One part of multi-part content, as in OpenAI's ``{"type": "text", "text": ...}``."""

EventKind = Literal["message", "tool_call", "tool_result", "state", "summary", "marker"]
Role = Literal["system", "developer", "user", "assistant", "tool"]
Order = Literal["asc", "desc"]

EVENT_KINDS: tuple[EventKind, ...] = (
    "message",
    "tool_call",
    "tool_result",
    "state",
    "summary",
    "marker",
)
ROLES: tuple[Role, ...] = ("system", "developer", "user", "assistant", "tool")

EVENT_SCHEMA_VERSION = 1
"""Version of the JSON document stored for each event."""

DEFAULT_BRANCH = "main"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by the assistant (OpenAI ``tool_calls`` entry)."""

    id: str
    name: str
    arguments: str
    """The arguments as the JSON text the model produced (kept verbatim)."""
    type: str = "function"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as the caller hands it to ``append``: no seq, no time yet.

    ``kind`` and ``role`` must agree: ``message`` has role system/developer/user/assistant;
    ``tool_call`` is an assistant event with ``tool_calls``; ``tool_result`` is a ``tool``
    event with ``tool_call_id``; ``state``/``summary``/``marker`` carry their payload in
    ``data`` and have no role. ``extra`` keeps any other OpenAI message fields verbatim so
    that conversion back to the OpenAI format is lossless.
    """

    kind: EventKind
    role: Role | None = None
    content: str | tuple[ContentPart, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    data: Mapping[str, JSONValue] = field(default_factory=dict)
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    token_count: int | None = None

    @classmethod
    def message(cls, role: Role, content: str, *, name: str | None = None) -> NewEvent:
        """Shortcut for a plain chat message."""
        return cls(kind="message", role=role, content=content, name=name)


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored: a :class:`NewEvent` plus its place in the log."""

    seq: int
    """Dense per-branch sequence number: 1, 2, 3, ... with no gaps."""
    branch: str
    """The branch whose log holds this event (an ancestor's, for inherited events)."""
    created_at: datetime
    kind: EventKind
    role: Role | None = None
    content: str | tuple[ContentPart, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    data: Mapping[str, JSONValue] = field(default_factory=dict)
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    token_count: int | None = None
    idempotency_key: str | None = None
    schema_version: int = EVENT_SCHEMA_VERSION
    unreadable: str | None = None
    """Set when the stored body could not be used: ``unreadable``, ``unknown kind`` or
    ``unknown role``. Such an event is a ``marker`` whose ``data`` holds the stored body
    verbatim (``raw``) and what is wrong with it (``problem``); readers leave it out and say
    so (see :func:`chatstate.store.codec.decode_event`)."""

    def draft(self) -> NewEvent:
        """The payload of this event, as it was appended."""
        return NewEvent(
            kind=self.kind,
            role=self.role,
            content=self.content,
            tool_calls=self.tool_calls,
            tool_call_id=self.tool_call_id,
            name=self.name,
            data=self.data,
            extra=self.extra,
            token_count=self.token_count,
        )


@dataclass(frozen=True, slots=True)
class Session:
    tenant_id: str
    id: str
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    user_id: str | None = None
    ttl_seconds: float | None = None
    """When set, every append moves ``expires_at`` to now + ttl."""
    expires_at: datetime | None = None
    default_branch: str = DEFAULT_BRANCH


@dataclass(frozen=True, slots=True)
class Branch:
    """A line of events. A fork shares its parent's events ``1..fork_seq`` without copies."""

    name: str
    head_seq: int
    created_at: datetime
    parent: str | None = None
    fork_seq: int | None = None


@dataclass(frozen=True, slots=True)
class StateDoc:
    """The session's versioned state document. Version 0 means "never written"."""

    version: int
    data: Mapping[str, JSONValue]
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote (or, for an idempotent replay, what the original wrote)."""

    branch: str
    first_seq: int
    last_seq: int
    events: tuple[Event, ...]
    replayed: bool = False
    """True when this result comes from an earlier append with the same idempotency key."""

    @property
    def head_seq(self) -> int:
        return self.last_seq


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back to get the next page."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can promise. Features a backend lacks are declared here, not stubbed."""

    durable: bool
    """Acknowledged writes survive the process (and, per backend docs, the server)."""
    shared: bool
    """Several processes can use the same store at once."""
    native_ttl: bool = False
    """Expired data disappears without calling ``purge_expired``."""


@dataclass(frozen=True, slots=True)
class SeqRange:
    """One range of a branch's view for ``Store.read_ranges``: the arguments of ``read``.

    Events with ``after_seq < seq < before_seq``; ``order="desc"`` takes the newest
    ``limit`` of them first. ``SeqRange(limit=n, order="desc")`` is the last ``n`` events.
    """

    after_seq: int = 0
    before_seq: int | None = None
    limit: int = 100
    order: Order = "asc"
