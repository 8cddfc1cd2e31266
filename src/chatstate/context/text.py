"""The plain text of an event, as retrieval, summaries and token estimates see it. Pure."""

from __future__ import annotations

from chatstate.model import Event, NewEvent

__all__ = ["event_text"]


def event_text(event: Event | NewEvent) -> str:
    """Content text, text parts joined, tool calls as ``name(arguments)``.

    Non-text parts (images, audio) become a short placeholder such as ``[image_url]``;
    ``summary`` events give their ``data["text"]``; other payload events give ``""``.
    """
    if event.kind == "summary":
        text = event.data.get("text")
        return text if isinstance(text, str) else ""
    pieces: list[str] = []
    content = event.content
    if isinstance(content, str):
        pieces.append(content)
    elif content is not None:
        for part in content:
            kind = part.get("type")
            value = part.get("text")
            if kind == "text" and isinstance(value, str):
                pieces.append(value)
            else:
                pieces.append(f"[{kind}]")
    for call in event.tool_calls:
        pieces.append(f"{call.name}({call.arguments})")
    return "\n".join(p for p in pieces if p)
