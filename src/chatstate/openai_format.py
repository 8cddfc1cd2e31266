"""Conversion between events and OpenAI chat messages, without loss.

``from_openai`` maps ``{"role", "content", "tool_calls", "tool_call_id", "name"}`` onto a
:class:`NewEvent` and keeps every other key in ``extra``; ``to_openai`` gives the same
message back. An assistant message with ``tool_calls`` becomes a ``tool_call`` event, a
``tool`` message a ``tool_result`` event. One normalisation: a message without a
``content`` key comes back with ``"content": null`` (the same meaning to every provider).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from chatstate.errors import ValidationError
from chatstate.model import ROLES, ContentPart, Event, JSONValue, NewEvent, Role, ToolCall

__all__ = [
    "UNREADABLE_MARK",
    "from_openai",
    "from_openai_messages",
    "to_openai",
    "to_openai_messages",
    "unreadable_line",
]

UNREADABLE_MARK = "chatstate_unreadable"
"""The key of an export line that holds a stored event this code could not read."""

_KNOWN = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})


def from_openai(message: Mapping[str, object], *, index: int = 0) -> NewEvent:
    """One OpenAI chat message as a :class:`NewEvent`."""
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise ValidationError(f"{where}: a message must be a JSON object")
    item_type = message.get("type")
    if item_type == "function_call":
        return _function_call(message, where)
    if item_type == "function_call_output":
        return _function_call_output(message, where)
    role = message.get("role")
    if role not in ROLES:
        raise ValidationError(f"{where}: role must be one of {', '.join(ROLES)}")
    content = message.get("content")
    parts: str | tuple[ContentPart, ...] | None
    if content is None or isinstance(content, str):
        parts = content
    elif isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = tuple(cast(ContentPart, p) for p in content)
    else:
        raise ValidationError(f"{where}: content must be text, a list of parts, or null")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError(f"{where}: name must be text")
    extra = {k: cast(JSONValue, v) for k, v in message.items() if k not in _KNOWN}
    raw_calls = message.get("tool_calls")
    tool_call_id = message.get("tool_call_id")
    if raw_calls is not None:
        if role != "assistant" or not isinstance(raw_calls, list):
            raise ValidationError(f"{where}: tool_calls must be a list on an assistant message")
        if not raw_calls:
            # An empty list is legal OpenAI; keep it verbatim rather than invent a kind.
            extra["tool_calls"] = []
        else:
            return NewEvent(
                kind="tool_call",
                role="assistant",
                content=parts,
                tool_calls=tuple(_tool_call(c, where) for c in raw_calls),
                name=name,
                extra=extra,
            )
    if role == "tool":
        if not isinstance(tool_call_id, str):
            raise ValidationError(f"{where}: a tool message needs tool_call_id")
        return NewEvent(
            kind="tool_result",
            role="tool",
            content=parts,
            tool_call_id=tool_call_id,
            name=name,
            extra=extra,
        )
    if tool_call_id is not None:
        raise ValidationError(f"{where}: tool_call_id belongs on a tool message")
    return NewEvent(kind="message", role=cast(Role, role), content=parts, name=name, extra=extra)


def _text_fields(message: Mapping[str, object], names: tuple[str, ...], where: str) -> list[str]:
    values = [message.get(n) for n in names]
    if not all(isinstance(v, str) for v in values):
        raise ValidationError(f"{where}: {message.get('type')} needs {', '.join(names)} as text")
    return cast(list[str], values)


def _function_call(message: Mapping[str, object], where: str) -> NewEvent:
    """A Responses ``function_call`` item: one tool call, the item's other keys kept."""
    call_id, name, arguments = _text_fields(message, ("call_id", "name", "arguments"), where)
    extra = {
        k: cast(JSONValue, v)
        for k, v in message.items()
        if k not in ("call_id", "name", "arguments")
    }
    return NewEvent(
        kind="tool_call",
        role="assistant",
        tool_calls=(ToolCall(id=call_id, name=name, arguments=arguments),),
        extra=extra,
    )


def _function_call_output(message: Mapping[str, object], where: str) -> NewEvent:
    """A Responses ``function_call_output`` item: the result of the call ``call_id``."""
    (call_id,) = _text_fields(message, ("call_id",), where)
    output = message.get("output")
    content: str | tuple[ContentPart, ...]
    if isinstance(output, str):
        content = output
    elif isinstance(output, list) and all(isinstance(p, dict) for p in output):
        content = tuple(cast(ContentPart, p) for p in output)
    else:
        raise ValidationError(f"{where}: function_call_output needs output as text or parts")
    extra = {k: cast(JSONValue, v) for k, v in message.items() if k not in ("call_id", "output")}
    return NewEvent(
        kind="tool_result", role="tool", content=content, tool_call_id=call_id, extra=extra
    )


def _as_item(event: Event | NewEvent, content: JSONValue) -> dict[str, JSONValue] | None:
    """The Responses item an event was made from, or ``None`` for a chat message."""
    item_type = event.extra.get("type")
    if item_type == "function_call" and event.kind == "tool_call" and len(event.tool_calls) == 1:
        call = event.tool_calls[0]
        item: dict[str, JSONValue] = {
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
    elif item_type == "function_call_output" and event.kind == "tool_result":
        item = {"call_id": event.tool_call_id, "output": content}
    else:
        return None
    item.update(event.extra)
    return item


def _tool_call(raw: object, where: str) -> ToolCall:
    if not isinstance(raw, dict) or set(raw) - {"id", "type", "function"}:
        raise ValidationError(f"{where}: a tool call is {{id, type, function}}")
    function = raw.get("function")
    if not isinstance(function, dict) or set(function) - {"name", "arguments"}:
        raise ValidationError(f"{where}: a tool call's function is {{name, arguments}}")
    call_id, kind = raw.get("id"), raw.get("type", "function")
    name, arguments = function.get("name"), function.get("arguments", "")
    if not all(isinstance(v, str) for v in (call_id, kind, name, arguments)):
        raise ValidationError(f"{where}: tool call id, type, name and arguments must be text")
    return ToolCall(
        id=cast(str, call_id), name=cast(str, name), arguments=cast(str, arguments), type=kind
    )


def to_openai(event: Event | NewEvent, *, include_extra: bool = True) -> dict[str, JSONValue]:
    """The OpenAI chat message for a message, tool_call or tool_result event.

    ``include_extra=False`` leaves out the non-standard fields kept in ``extra`` (what a
    provider's response carried, such as ``refusal`` or ``annotations``): use it when the
    message goes back to a model as input.
    """
    if event.kind not in ("message", "tool_call", "tool_result") or event.role is None:
        raise ValidationError(f"a {event.kind} event has no chat message form")
    content: JSONValue = (
        [dict(p) for p in event.content] if isinstance(event.content, tuple) else event.content
    )
    if include_extra and (item := _as_item(event, content)) is not None:
        return item
    out: dict[str, JSONValue] = {"role": event.role, "content": content}
    if event.name is not None:
        out["name"] = event.name
    if event.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": c.type, "function": {"name": c.name, "arguments": c.arguments}}
            for c in event.tool_calls
        ]
    if event.tool_call_id is not None:
        out["tool_call_id"] = event.tool_call_id
    if include_extra:
        out.update(event.extra)
    return out


def from_openai_messages(messages: Iterable[Mapping[str, object]]) -> list[NewEvent]:
    return [from_openai(m, index=i) for i, m in enumerate(messages)]


def to_openai_messages(events: Iterable[Event | NewEvent]) -> list[dict[str, JSONValue]]:
    """Chat messages for the events that have one; state/summary/marker events are skipped."""
    return [to_openai(e) for e in events if e.kind in ("message", "tool_call", "tool_result")]


def unreadable_line(event: Event) -> dict[str, JSONValue]:
    """The export line of a stored event that cannot be read: its body as stored, marked
    (``{"chatstate_unreadable": {"seq", "reason", "problem", "raw"}}``); an import skips
    such lines and says how many."""
    return {
        UNREADABLE_MARK: {
            "seq": event.seq,
            "reason": event.unreadable,
            "problem": event.data.get("problem"),
            "raw": event.data.get("raw"),
        }
    }
