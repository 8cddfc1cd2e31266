"""``chatstate import`` and ``demo``, and what every command shares.

A command is an async function ``(Context, argparse.Namespace) -> exit code``. It writes
its result to ``ctx.out`` (text, or one JSON document with ``--json``) and raises
:class:`~chatstate.errors.ChatstateError` or :class:`~chatstate.cli._errors.CliError` on
failure; ``main`` turns those into one line on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from typing import TextIO

from chatstate.cli._errors import CliError
from chatstate.cli._render import TranscriptView, event_json
from chatstate.cli._transcript import (
    InputError,
    chunk,
    parse_transcript,
    read_source,
    to_events,
)
from chatstate.errors import ChatstateError
from chatstate.model import JSONValue, NewEvent, Session
from chatstate.openai_format import UNREADABLE_MARK
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.store.url import open_store, redact

__all__ = ["Context", "demo", "import_file", "opened", "print_json"]

_PROGRESS_EVERY = 10_000
"""A long import reports on stderr every this many events."""
EXAMPLE = "support_chat.json"
"""The example transcript that ships in ``chatstate/examples/``."""


@dataclass(frozen=True, slots=True)
class Context:
    """What every command gets besides its own arguments."""

    database_url: str
    tenant: str
    as_json: bool
    out: TextIO
    err: TextIO
    width: int = 100
    config: StoreConfig = field(default_factory=StoreConfig)
    cache_url: str | None = None
    """A Redis URL for the hot tier in front of the database, or ``None``."""


@asynccontextmanager
async def opened(ctx: Context, url: str | None = None) -> AsyncIterator[Store]:
    """The store at ``url`` (default: the context's), closed on the way out."""
    url = url or ctx.database_url
    try:
        store = await open_store(url, cache_url=ctx.cache_url, config=ctx.config)
    except ModuleNotFoundError as exc:  # a backend module this install does not have
        raise CliError(f"cannot open {redact(url)}: module {exc.name!r} is missing") from exc
    try:
        yield store
    finally:
        await store.close()


def print_json(ctx: Context, value: JSONValue) -> None:
    ctx.out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated transcript, split into appends within the store's limits."""

    chunks: list[list[NewEvent]]
    key: str
    """Idempotency key prefix, derived from the file's content."""
    unreadable: int = 0
    """Lines marked ``chatstate_unreadable`` (an export of events that could not be
    read), skipped."""

    @classmethod
    def of(cls, ctx: Context, name: str, text: str) -> Prepared:
        limits = ctx.config.limits
        messages = parse_transcript(name, text)
        kept = [m for m in messages if not _marked_unreadable(m.value)]
        if not kept:
            raise InputError(f"{name}: no messages found, only events marked {UNREADABLE_MARK!r}")
        chunks = chunk(to_events(kept, limits), limits)
        key = "import-" + hashlib.sha256(text.encode()).hexdigest()[:24]
        return cls(chunks, key, len(messages) - len(kept))


def _marked_unreadable(value: object) -> bool:
    return isinstance(value, dict) and UNREADABLE_MARK in value and "role" not in value


async def _import(
    ctx: Context,
    store: Store,
    prepared: Prepared,
    *,
    session_id: str | None,
    user_id: str | None,
    metadata: Mapping[str, JSONValue],
) -> tuple[Session, int]:
    """Create a session holding the transcript; ``(session, events written)``.

    Each append names the head it expects, so nothing can interleave with the import,
    and carries an idempotency key. A failed append deletes the half-written session.
    """
    session = await store.create_session(
        tenant_id=ctx.tenant, session_id=session_id, user_id=user_id, metadata=metadata
    )
    head = shown = 0
    total = sum(len(c) for c in prepared.chunks)
    try:
        for number, events in enumerate(prepared.chunks):
            result = await store.append(
                tenant_id=ctx.tenant,
                session_id=session.id,
                events=events,
                expected_seq=head,
                idempotency_key=f"{prepared.key}-{number}",
            )
            head = result.last_seq
            if total >= _PROGRESS_EVERY and head // _PROGRESS_EVERY > shown // _PROGRESS_EVERY:
                shown = head
                ctx.err.write(f"import: {head:,} of {total:,} events\n")
                ctx.err.flush()
    except ChatstateError:
        with suppress(ChatstateError):
            await store.delete_session(tenant_id=ctx.tenant, session_id=session.id)
        raise
    return session, head


async def import_file(ctx: Context, args: argparse.Namespace) -> int:
    """``chatstate import FILE``: a new session from a transcript file; prints its id."""
    prepared = Prepared.of(ctx, *read_source(str(args.file)))  # before touching the database
    source = "stdin" if args.file == "-" else str(args.file).rsplit("/", 1)[-1][:200]
    if prepared.unreadable:
        ctx.err.write(
            f"skipped {prepared.unreadable} lines marked {UNREADABLE_MARK!r} "
            "(events the exporting chatstate could not read)\n"
        )
    async with opened(ctx) as store:
        session, count = await _import(
            ctx,
            store,
            prepared,
            session_id=args.session_id,
            user_id=args.user_id,
            metadata={"imported_from": source},
        )
    if ctx.as_json:
        print_json(ctx, {"id": session.id, "events": count, "tenant": ctx.tenant})
    else:
        ctx.out.write(f"{session.id}\n")
    return 0


async def demo(ctx: Context, args: argparse.Namespace) -> int:
    """``chatstate demo``: import the shipped example transcript and show it."""
    text = resources.files("chatstate").joinpath("examples", EXAMPLE).read_text("utf-8")
    prepared = Prepared.of(ctx, EXAMPLE, text)
    async with opened(ctx) as store:
        session, count = await _import(
            ctx, store, prepared, session_id=None, user_id=None, metadata={"source": "demo"}
        )
        events = await store.read(tenant_id=ctx.tenant, session_id=session.id, limit=count)
    if ctx.as_json:
        print_json(
            ctx,
            {
                "id": session.id,
                "events": count,
                "tenant": ctx.tenant,
                "transcript": [event_json(e) for e in events],
            },
        )
        return 0
    ctx.out.write(
        f"Imported the example support chat into {redact(ctx.database_url)}\n"
        f"session {session.id} (tenant {ctx.tenant}, {count} events)\n\n"
    )
    view = TranscriptView(width=ctx.width, full=bool(args.full))
    for block in view.render(events):
        ctx.out.write(block + "\n\n")
    ctx.out.write(
        "Next:\n"
        "  chatstate sessions list\n"
        f"  chatstate sessions show {session.id} --last 3\n"
        f"  chatstate sessions export {session.id} -o chat.jsonl\n"
    )
    return 0
