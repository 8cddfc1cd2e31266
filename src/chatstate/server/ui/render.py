"""Jinja2 rendering of the inspector's pages (templates ship in the package)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from chatstate.model import Branch, Event, JSONValue
from chatstate.server.gateway import response_of
from chatstate.server.ui.data import severity

__all__ = ["env", "lane_of", "page", "partial_status"]

env = Environment(
    loader=PackageLoader("chatstate.server.ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 0:
        seconds = -seconds
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"in {int(seconds // size)} {unit}"
        return f"in {int(seconds)} s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _pretty(value: JSONValue | Mapping[str, JSONValue]) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _text(event: Event) -> str:
    content = event.content
    if isinstance(content, str):
        return content
    if isinstance(content, tuple):
        return " ".join(str(p.get("text", "[" + str(p.get("type")) + "]")) for p in content)
    return ""


def partial_status(event: Event) -> str | None:
    """``incomplete``/``cancelled``/``error`` for an answer the gateway stored cut short."""
    meta = event.data.get("chatstate")
    status = meta.get("status") if isinstance(meta, dict) else None
    return status if isinstance(status, str) and status != "complete" else None


def lane_of(branches: Mapping[str, Branch], branch: str, seq: int) -> str:
    """The lane that shows ``seq`` of ``branch``: a fork's shared seqs are its parent's."""
    seen = 0
    current = branches.get(branch)
    while (
        current is not None
        and current.parent is not None
        and current.fork_seq is not None
        and seq <= current.fork_seq
        and seen < 64
    ):
        current, seen = branches.get(current.parent), seen + 1
    return current.name if current is not None else branch


env.filters["when"] = _when
env.filters["ago"] = _ago
env.filters["pretty"] = _pretty
env.globals["text_of"] = _text
env.globals["partial_status"] = partial_status
env.globals["response_of"] = response_of
env.globals["severity"] = severity


# Nothing but this origin: scripts, styles and images all ship with the package (inline
# style attributes draw the budget bar's widths).
CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def page(request: Request, template: str, status: int = 200, **values: object) -> HTMLResponse:
    html = env.get_template(template).render(request=request, **values)
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": CSP}
    return HTMLResponse(html, status_code=status, headers=headers)
