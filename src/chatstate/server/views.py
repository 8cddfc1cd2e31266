"""Request bodies (pydantic, for validation and the OpenAPI schema) and response shapes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic import JsonValue as PydanticJson

from chatstate.errors import ValidationError
from chatstate.model import Branch, Event, JSONValue, NewEvent, Session, StateDoc
from chatstate.openai_format import from_openai, unreadable_line

__all__ = [
    "AppendBody",
    "ChatBody",
    "ContextBody",
    "CreateSessionBody",
    "ForkBody",
    "StateBody",
    "TTLBody",
    "branch_json",
    "event_json",
    "session_json",
    "state_json",
    "to_new_event",
    "unreadable_line",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSessionBody(_Body):
    id: str | None = Field(default=None, max_length=128, pattern=_ID)
    user_id: str | None = Field(default=None, max_length=128, pattern=_ID)
    metadata: dict[str, PydanticJson] | None = None
    ttl_seconds: float | None = Field(default=None, gt=0)


class TTLBody(_Body):
    ttl_seconds: float | None = Field(default=None, gt=0)


class AppendBody(_Body):
    """OpenAI chat messages, or ``{"kind": "marker"|"state"|"summary", "data": {...}}``."""

    events: list[dict[str, PydanticJson]] = Field(min_length=1)
    expected_seq: int | None = Field(default=None, ge=0)


class ForkBody(_Body):
    name: str = Field(max_length=128, pattern=_ID)
    from_branch: str = Field(default="main", max_length=128, pattern=_ID)
    at_seq: int | None = Field(default=None, ge=0)


class ContextBody(_Body):
    message: str | None = None
    model: str = Field(default="gpt-4o", max_length=200)
    budget: int | None = Field(default=None, ge=1, le=10_000_000)
    branch: str = Field(default="main", max_length=128, pattern=_ID)
    system: str | None = None
    policy: str | None = Field(default=None, max_length=200)
    """A preset (``balanced``, ``recall``, ``cost``) and overrides: ``"recall,retrieve_k=8"``."""


class StateBody(_Body):
    data: dict[str, PydanticJson]


class ChatBody(BaseModel):
    """The OpenAI chat completion body plus chatstate's own fields; others pass through."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=200)
    messages: list[dict[str, PydanticJson]] = Field(min_length=1)
    stream: bool = False
    session_id: str | None = Field(default=None, max_length=128, pattern=_ID)
    branch: str = Field(default="main", max_length=128, pattern=_ID)
    context_budget: int | None = Field(default=None, ge=1, le=10_000_000)


_DATA_KINDS = ("marker", "state", "summary")


def to_new_event(raw: Mapping[str, PydanticJson], index: int) -> NewEvent:
    kind = raw.get("kind")
    if kind is None:
        return from_openai(raw, index=index)
    if kind not in _DATA_KINDS or set(raw) - {"kind", "data"}:
        raise ValidationError(
            f"events[{index}]: give an OpenAI message, or kind marker/state/summary with data"
        )
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise ValidationError(f"events[{index}]: data must be an object")
    return NewEvent(
        kind=cast(Literal["marker", "state", "summary"], kind),
        data=data,
    )


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def session_json(session: Session) -> dict[str, JSONValue]:
    return {
        "id": session.id,
        "user_id": session.user_id,
        "metadata": dict(session.metadata),
        "created_at": _time(session.created_at),
        "updated_at": _time(session.updated_at),
        "ttl_seconds": session.ttl_seconds,
        "expires_at": _time(session.expires_at),
        "default_branch": session.default_branch,
    }


def branch_json(branch: Branch) -> dict[str, JSONValue]:
    return {
        "name": branch.name,
        "head_seq": branch.head_seq,
        "created_at": _time(branch.created_at),
        "parent": branch.parent,
        "fork_seq": branch.fork_seq,
    }


def event_json(event: Event) -> dict[str, JSONValue]:
    """An event as the API shows it; one that could not be read from the store carries
    ``unreadable`` (the reason) and its stored body in ``data.raw``."""
    content: JSONValue = (
        [dict(p) for p in event.content] if isinstance(event.content, tuple) else event.content
    )
    out: dict[str, JSONValue] = {
        "seq": event.seq,
        "branch": event.branch,
        "created_at": _time(event.created_at),
        "kind": event.kind,
        "role": event.role,
        "content": content,
        "tool_calls": [
            {"id": c.id, "type": c.type, "function": {"name": c.name, "arguments": c.arguments}}
            for c in event.tool_calls
        ],
        "tool_call_id": event.tool_call_id,
        "name": event.name,
        "data": dict(event.data),
        "extra": dict(event.extra),
        "token_count": event.token_count,
    }
    if event.unreadable is not None:
        out["unreadable"] = event.unreadable
    return out


def state_json(doc: StateDoc) -> dict[str, JSONValue]:
    """A branch's state over HTTP: ``data`` is the user's document (what ``PUT /state``
    replaces), ``keeper`` the state keeper's bookkeeping (its cursors, health flags and
    write marks, the ``_``-prefixed keys it keeps beside the document), read-only."""
    data = dict(doc.data)
    return {
        "version": doc.version,
        "data": {k: v for k, v in data.items() if not k.startswith("_")},
        "keeper": {k: v for k, v in data.items() if k.startswith("_")},
        "updated_at": _time(doc.updated_at),
    }
