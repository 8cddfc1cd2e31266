"""``chatstate sessions list|show|export|delete``."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from chatstate.cli._commands import Context, opened, print_json
from chatstate.cli._errors import CliError, UsageError
from chatstate.cli._render import (
    SessionRow,
    TranscriptView,
    event_json,
    session_header,
    session_json,
    session_table,
)
from chatstate.errors import BranchNotFound, NotFound, SessionNotFound
from chatstate.model import Event, JSONValue
from chatstate.openai_format import UNREADABLE_MARK, to_openai, unreadable_line
from chatstate.store.erase import erase
from chatstate.store.protocol import Store

__all__ = ["delete", "export", "list_sessions", "pages", "show"]

PAGE = 1000
"""Events read per call; a session of any length is streamed page by page."""

_CHAT_KINDS = ("message", "tool_call", "tool_result")


async def pages(
    store: Store, tenant: str, session_id: str, branch: str, *, after_seq: int = 0
) -> AsyncIterator[list[Event]]:
    """The branch's events after ``after_seq``, oldest first, one page at a time."""
    while True:
        page = await store.read(
            tenant_id=tenant, session_id=session_id, branch=branch, after_seq=after_seq, limit=PAGE
        )
        if page:
            yield page
        if len(page) < PAGE:
            return
        after_seq = page[-1].seq


async def _head(store: Store, tenant: str, session_id: str, branch: str) -> int:
    for info in await store.list_branches(tenant_id=tenant, session_id=session_id):
        if info.name == branch:
            return info.head_seq
    raise BranchNotFound(f"branch {branch!r} not found in session {session_id!r}")


async def list_sessions(ctx: Context, args: argparse.Namespace) -> int:
    """Sessions of the tenant, newest first, with the cursor of the next page."""
    async with opened(ctx) as store:
        page = await store.list_sessions(
            tenant_id=ctx.tenant, user_id=args.user_id, limit=args.limit, cursor=args.cursor
        )
        rows = []
        for session in page.items:
            try:
                head = await _head(store, ctx.tenant, session.id, session.default_branch)
            except NotFound:
                continue  # deleted or expired since the listing
            rows.append(SessionRow(session, head))
    if ctx.as_json:
        print_json(
            ctx, {"sessions": [session_json(r) for r in rows], "next_cursor": page.next_cursor}
        )
        return 0
    if not rows:
        ctx.out.write(f"no sessions in tenant {ctx.tenant!r}\n")
    else:
        ctx.out.write(session_table(rows, ctx.width) + "\n")
    if page.next_cursor:
        ctx.out.write(f"\nnext page: --cursor {page.next_cursor}\n")
    return 0


async def show(ctx: Context, args: argparse.Namespace) -> int:
    """A readable transcript of one branch, or of its last ``--last`` events."""
    async with opened(ctx) as store:
        session = await store.get_session(tenant_id=ctx.tenant, session_id=args.id)
        branch = args.branch or session.default_branch
        head = await _head(store, ctx.tenant, session.id, branch)
        if args.last is not None:
            last = await store.read_last(
                tenant_id=ctx.tenant, session_id=session.id, branch=branch, n=args.last
            )
            chunks: AsyncIterator[list[Event]] = _one(last)
        else:
            chunks = pages(store, ctx.tenant, session.id, branch)
        if ctx.as_json:
            events: list[JSONValue] = [event_json(e) async for page in chunks for e in page]
            print_json(ctx, {"session": session_json(SessionRow(session, head)), "events": events})
            return 0
        ctx.out.write(session_header(session, branch, head) + "\n\n")
        view = TranscriptView(width=ctx.width, full=bool(args.full))
        async for page in chunks:
            for block in view.render(page):
                ctx.out.write(block + "\n\n")
    return 0


async def _one(events: list[Event]) -> AsyncIterator[list[Event]]:
    yield events


async def export(ctx: Context, args: argparse.Namespace) -> int:
    """JSONL, one OpenAI message per line, that ``chatstate import`` reads back identically.

    state, summary and marker events have no chat message form; they are counted on
    stderr, not written. A stored event that cannot be read is written as it is stored,
    on a line of its own marked ``chatstate_unreadable`` (import skips those lines).
    """
    target = None if args.output in (None, "-") else Path(args.output)
    async with opened(ctx) as store:
        session = await store.get_session(tenant_id=ctx.tenant, session_id=args.id)
        branch = args.branch or session.default_branch
        if target is None:
            written, skipped, marked = await _write_jsonl(store, ctx, session.id, branch, ctx.out)
        else:
            written, skipped, marked = await _export_file(store, ctx, session.id, branch, target)
    if skipped:
        ctx.err.write(f"skipped {skipped} state/summary/marker events (no chat message form)\n")
    if marked:
        ctx.err.write(
            f"wrote {marked} events that cannot be read as they are stored, "
            f"each on a line marked {UNREADABLE_MARK!r}\n"
        )
    if target is not None:
        if ctx.as_json:
            print_json(ctx, {"id": session.id, "messages": written, "file": str(target)})
        else:
            ctx.out.write(f"wrote {written} messages to {target}\n")
    return 0


async def _export_file(
    store: Store, ctx: Context, session_id: str, branch: str, target: Path
) -> tuple[int, int, int]:
    """Write to a temporary file beside ``target`` and rename it: no half-written exports."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as out:
            counts = await _write_jsonl(store, ctx, session_id, branch, out)
        partial.replace(target)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return counts


async def _write_jsonl(
    store: Store, ctx: Context, session_id: str, branch: str, out: TextIO
) -> tuple[int, int, int]:
    """Messages written, events skipped, unreadable events written marked."""
    written = skipped = marked = 0
    async for page in pages(store, ctx.tenant, session_id, branch):
        for event in page:
            if event.unreadable is not None:
                out.write(json.dumps(unreadable_line(event), ensure_ascii=False) + "\n")
                marked += 1
                continue
            if event.kind not in _CHAT_KINDS:
                skipped += 1
                continue
            out.write(json.dumps(to_openai(event), ensure_ascii=False) + "\n")
            written += 1
    return written, skipped, marked


async def delete(ctx: Context, args: argparse.Namespace) -> int:
    """Hard-delete one session, or with ``--user-id U --yes`` every session of a user."""
    if (args.id is None) == (args.user_id is None):
        raise UsageError("give a session ID or --user-id USER (not both)")
    if args.user_id is not None and not args.yes:
        raise UsageError(
            f"this deletes every session of user {args.user_id!r} in tenant {ctx.tenant!r}; "
            "add --yes to confirm"
        )
    async with opened(ctx) as store:
        if args.id is not None:
            try:
                await erase(store, ctx.tenant, session_id=args.id)
            except SessionNotFound as exc:
                raise SessionNotFound(f"session {args.id!r} not found") from exc
            count = 1
        else:
            count = await erase(store, ctx.tenant, user_id=args.user_id)
    if ctx.as_json:
        print_json(ctx, {"deleted": count})
    elif args.id is not None:
        ctx.out.write(f"deleted session {args.id}\n")
    else:
        ctx.out.write(f"deleted {count} sessions of user {args.user_id}\n")
    return 0
