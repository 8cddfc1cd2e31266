"""Text and JSON views of sessions and events for the CLI. Pure: values in, strings out."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from chatstate.model import ContentPart, Event, JSONValue, Session

__all__ = [
    "SessionRow",
    "TranscriptView",
    "compact",
    "event_json",
    "session_header",
    "session_json",
    "session_table",
]

INDENT = "    "
MAX_BODY_LINES = 30
"""Lines shown of one event's body unless ``--full`` is given."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session and the number of events on its default branch."""

    session: Session
    events: int


def when(moment: datetime | None) -> str:
    """A UTC time to the second, ``2024-05-14 09:30:00``; ``-`` for none."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def compact(value: object) -> str:
    """One-line JSON with unicode kept readable."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def session_json(row: SessionRow) -> dict[str, JSONValue]:
    s = row.session
    return {
        "id": s.id,
        "tenant": s.tenant_id,
        "user_id": s.user_id,
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
        "expires_at": None if s.expires_at is None else s.expires_at.isoformat(),
        "default_branch": s.default_branch,
        "events": row.events,
        "metadata": dict(s.metadata),
    }


def session_table(rows: Sequence[SessionRow], width: int) -> str:
    """Sessions as an aligned table; the metadata column takes what width is left."""
    header = ("ID", "CREATED (UTC)", "UPDATED (UTC)", "EVENTS", "USER", "METADATA")
    cells = [
        (
            r.session.id,
            when(r.session.created_at),
            when(r.session.updated_at),
            str(r.events),
            r.session.user_id or "-",
            compact(dict(r.session.metadata)) if r.session.metadata else "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header[:-1])]
    room = max(20, width - sum(widths) - 2 * len(widths))
    lines = []
    for line in (header, *cells):
        fixed = [
            cell.rjust(w) if i == 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=False))
        ]
        meta = line[-1] if len(line[-1]) <= room else line[-1][: room - 1] + "…"
        lines.append("  ".join([*fixed, meta]).rstrip())
    return "\n".join(lines)


def session_header(session: Session, branch: str, head: int) -> str:
    user = session.user_id or "-"
    meta = compact(dict(session.metadata)) if session.metadata else "-"
    return (
        f"session {session.id}  tenant {session.tenant_id}  user {user}\n"
        f"branch {branch}, {head} events  created {when(session.created_at)} UTC  "
        f"updated {when(session.updated_at)} UTC\n"
        f"metadata {meta}"
    )


def event_json(event: Event) -> dict[str, JSONValue]:
    """Every field of an event, for ``--json`` output."""
    content: JSONValue = (
        [dict(p) for p in event.content] if isinstance(event.content, tuple) else event.content
    )
    return {
        "seq": event.seq,
        "branch": event.branch,
        "created_at": event.created_at.isoformat(),
        "kind": event.kind,
        "role": event.role,
        "content": content,
        "tool_calls": [
            {"id": c.id, "type": c.type, "name": c.name, "arguments": c.arguments}
            for c in event.tool_calls
        ],
        "tool_call_id": event.tool_call_id,
        "name": event.name,
        "data": dict(event.data),
        "extra": dict(event.extra),
        "token_count": event.token_count,
    }


def part_text(part: ContentPart) -> str:
    """One part of multi-part content: its text, or a one-line summary of its media."""
    kind = str(part.get("type", "?"))
    if kind == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    inner = part.get(kind)
    if kind == "image_url" and isinstance(inner, Mapping):
        url = str(inner.get("url", ""))
        if url.startswith("data:"):
            return f"[image: data URL, {len(url) // 1024} KiB]"
        return f"[image: {url}]"
    if kind == "input_audio" and isinstance(inner, Mapping):
        return f"[audio: {inner.get('format', '?')}]"
    if kind == "file" and isinstance(inner, Mapping):
        return f"[file: {inner.get('filename') or inner.get('file_id') or '?'}]"
    return f"[{kind} part]"


@dataclass(slots=True)
class TranscriptView:
    """Renders events one at a time, remembering tool call names for their results."""

    width: int = 100
    full: bool = False
    _tool_names: dict[str, str] = field(default_factory=dict)

    def render(self, events: Iterable[Event]) -> Iterable[str]:
        for event in events:
            yield self.event(event)

    def event(self, event: Event) -> str:
        return "\n".join([self._title(event), *self._body(event)])

    def _title(self, event: Event) -> str:
        mark = f"#{event.seq}"
        if event.kind in ("state", "summary", "marker"):
            return f"{mark}  ── {event.kind} ──"
        label: str = event.role or event.kind
        if event.name:
            label += f" ({event.name})"
        if event.kind == "tool_result" and event.tool_call_id is not None:
            tool = self._tool_names.get(event.tool_call_id)
            label += f"  ← result of {event.tool_call_id}" + (f" ({tool})" if tool else "")
        return f"{mark}  {label}"

    def _body(self, event: Event) -> list[str]:
        paragraphs: list[str] = []
        if event.kind in ("state", "summary", "marker"):
            text = event.data.get("text") if event.kind == "summary" else None
            paragraphs.append(text if isinstance(text, str) else compact(dict(event.data)))
        elif isinstance(event.content, str):
            paragraphs.append(event.content)
        elif event.content is not None:
            paragraphs.extend(part_text(p) for p in event.content)
        for call in event.tool_calls:
            self._tool_names[call.id] = call.name
            paragraphs.append(f"→ {call.name}({call.arguments})  [{call.id}]")
        if event.extra:
            paragraphs.append(f"extra: {compact(dict(event.extra))}")
        return self._wrap(paragraphs)

    def _wrap(self, paragraphs: list[str]) -> list[str]:
        width = max(self.width, 40)
        lines: list[str] = []
        for paragraph in paragraphs:
            for raw in paragraph.splitlines() or [""]:
                wrapped = textwrap.wrap(
                    raw,
                    width=width,
                    initial_indent=INDENT,
                    subsequent_indent=INDENT,
                    break_on_hyphens=False,
                    drop_whitespace=True,
                )
                lines.extend(wrapped or [INDENT.rstrip()])
        if not self.full and len(lines) > MAX_BODY_LINES:
            hidden = len(lines) - MAX_BODY_LINES
            lines = [*lines[:MAX_BODY_LINES], f"{INDENT}… {hidden} more lines (--full shows all)"]
        return lines
