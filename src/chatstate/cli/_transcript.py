"""Reading a transcript file: a JSON array of OpenAI messages, or JSONL, one per line.

Everything here is pure (text in, events out) except :func:`read_source`, which reads a
file or stdin. Every problem is reported as an :class:`InputError` naming the place in the
file, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatstate.cli._errors import UsageError
from chatstate.errors import ChatstateError
from chatstate.model import NewEvent
from chatstate.openai_format import from_openai
from chatstate.store.codec import encode_appends
from chatstate.store.rules import StoreLimits

__all__ = ["InputError", "Message", "chunk", "parse_transcript", "read_source", "to_events"]


class InputError(UsageError):
    """A transcript file that cannot be read or is not valid. The CLI exits with 2."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a transcript and where it came from (for error messages)."""

    where: str
    value: object


def read_source(path: str) -> tuple[str, str]:
    """``(display name, text)`` of ``path``; ``-`` reads stdin."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        name = path
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (byte {exc.start})") from exc


def parse_transcript(name: str, text: str) -> list[Message]:
    """The messages of a JSON array or of JSONL, detected by the first character."""
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{name}: the file is empty; expected OpenAI chat messages")
    messages = _parse_array(name, text) if stripped[0] == "[" else list(_parse_lines(name, text))
    if not messages:
        raise InputError(f"{name}: no messages found")
    return messages


def _parse_array(name: str, text: str) -> list[Message]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(value, list):
        raise InputError(f"{name}: expected a JSON array of messages")
    return [Message(f"{name}: message [{i}]", item) for i, item in enumerate(value)]


def _parse_lines(name: str, text: str) -> Iterator[Message]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if number == 1 and line.strip() == "{":
                hint = " (JSONL needs one whole message per line; or give a JSON array)"
            raise InputError(
                f"{where}: invalid JSON at column {exc.colno}: {exc.msg}{hint}"
            ) from exc
        yield Message(where, value)


def to_events(messages: Sequence[Message], limits: StoreLimits) -> list[tuple[NewEvent, int]]:
    """Each message as a validated event with its stored size in bytes.

    Runs the same checks the store runs (shape, text policy, size) so that a bad message
    is reported with its line before anything is written.
    """
    out: list[tuple[NewEvent, int]] = []
    for index, message in enumerate(messages):
        value = message.value
        if isinstance(value, dict) and "messages" in value and "role" not in value:
            raise InputError(
                f"{message.where}: this is a whole conversation ({{'messages': [...]}}); "
                "give one message per line, or the messages array itself"
            )
        if not isinstance(value, dict):
            raise InputError(f"{message.where}: a message must be a JSON object")
        try:
            event = from_openai(value, index=index)
            (encoded,) = encode_appends([event], limits)
        except ChatstateError as exc:
            raise InputError(f"{message.where}: {_detail(exc.message, index)}") from exc
        out.append((event, encoded.size))
    return out


def _detail(text: str, index: int) -> str:
    """An error message without the ``messages[i]``/``events[0]`` place the caller names."""
    text = text.removeprefix(f"messages[{index}]: ")
    for prefix in ("events[0].", "events[0]: "):
        if text.startswith(prefix):
            return text.removeprefix(prefix)
    if text.startswith("events[0]"):
        return "the message" + text.removeprefix("events[0]")
    return text


def chunk(sized: Sequence[tuple[NewEvent, int]], limits: StoreLimits) -> list[list[NewEvent]]:
    """Split events into appends within the store's per-append count and size limits."""
    chunks: list[list[NewEvent]] = []
    current: list[NewEvent] = []
    total = 0
    for event, size in sized:
        full = len(current) >= limits.max_events_per_append
        if current and (full or total + size > limits.max_append_bytes):
            chunks.append(current)
            current, total = [], 0
        current.append(event)
        total += size
    if current:
        chunks.append(current)
    return chunks
