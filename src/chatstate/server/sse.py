"""Pure helpers of the gateway: records to server-sent events, and records to an answer.

Nothing here does I/O. A chunk record becomes ``id: N`` plus ``data: <chunk JSON>``; the
terminal record ``done`` becomes ``event: done`` with ``data: [DONE]`` (what OpenAI clients
wait for), and ``error``, ``cancelled`` and ``incomplete`` become an event of that name
whose data is ``{"error": {...}}``, which the official client raises as ``APIError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from chatstate.model import JSONValue, NewEvent, ToolCall
from chatstate.server.streams import Record

__all__ = ["Answer", "collect", "completion", "sse"]


def sse(record: Record) -> bytes:
    head = f"id: {record.seq}\n"
    if record.type == "chunk":
        return (head + "data: " + _dumps(record.payload) + "\n\n").encode()
    if record.type == "done":
        return (head + "event: done\ndata: [DONE]\n\n").encode()
    message = record.payload.get("message")
    error: dict[str, JSONValue] = {
        "type": record.type,
        "code": record.payload.get("code", record.type),
        "message": message if isinstance(message, str) else f"response {record.type}",
    }
    body = _dumps({"error": error, "status": record.type})
    return (head + f"event: {record.type}\ndata: {body}\n\n").encode()


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))  # ASCII: no U+2028 or NEL in lines


@dataclass(slots=True)
class Answer:
    """What a chunk log adds up to."""

    status: str = "streaming"
    content: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: JSONValue = None
    model: str | None = None
    created: int = 0

    @property
    def complete(self) -> bool:
        return self.status == "done"

    def tool_call_list(self) -> list[ToolCall]:
        return [
            ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
            for _, c in sorted(self.tool_calls.items())
            if c.get("id") and c.get("name")
        ]

    def event(self, response_id: str) -> NewEvent | None:
        """The assistant event to store, or ``None`` when nothing was generated.

        A response that did not complete keeps its text and loses its tool calls (their
        arguments may be cut; a half call would orphan the session). ``data.chatstate``
        records the response id and whether the answer is complete.
        """
        calls = tuple(self.tool_call_list()) if self.complete else ()
        if not self.content and not calls:
            return None
        meta: dict[str, JSONValue] = {
            "response_id": response_id,
            "status": "complete" if self.complete else self.status,
            "finish_reason": self.finish_reason,
        }
        data: dict[str, JSONValue] = {"chatstate": meta}
        if calls:
            return NewEvent(
                kind="tool_call",
                role="assistant",
                content=self.content or None,
                tool_calls=calls,
                data=data,
            )
        return NewEvent(kind="message", role="assistant", content=self.content, data=data)


def collect(records: Sequence[Record]) -> Answer:
    answer = Answer()
    for record in records:
        if record.terminal:
            answer.status = record.type
            break
        if record.type != "chunk":
            continue
        chunk = record.payload
        if isinstance(chunk.get("model"), str):
            answer.model = cast(str, chunk["model"])
        if isinstance(chunk.get("created"), int):
            answer.created = cast(int, chunk["created"])
        if chunk.get("usage") is not None:
            answer.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                _apply(answer, choice)
    return answer


def _apply(answer: Answer, choice: Mapping[str, JSONValue]) -> None:
    if isinstance(choice.get("finish_reason"), str):
        answer.finish_reason = cast(str, choice["finish_reason"])
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return
    if isinstance(delta.get("content"), str):
        answer.content += cast(str, delta["content"])
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        slot = answer.tool_calls.setdefault(
            index if isinstance(index, int) else 0, {"id": "", "name": "", "arguments": ""}
        )
        if isinstance(call.get("id"), str):
            slot["id"] = cast(str, call["id"])
        function = call.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                slot["name"] += cast(str, function["name"])
            if isinstance(function.get("arguments"), str):
                slot["arguments"] += cast(str, function["arguments"])


def completion(response_id: str, model: str, answer: Answer) -> dict[str, JSONValue]:
    """The non-streaming ``chat.completion`` object for a finished answer."""
    message: dict[str, JSONValue] = {"role": "assistant", "content": answer.content or None}
    calls = answer.tool_call_list()
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": c.type, "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    choice: dict[str, JSONValue] = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason or "stop",
        "logprobs": None,
    }
    out: dict[str, JSONValue] = {
        "id": response_id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model or model,
        "choices": [choice],
    }
    if answer.usage is not None:
        out["usage"] = answer.usage
    return out
