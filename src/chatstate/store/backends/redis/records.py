"""How the Redis backend lays out keys and reads its records back, checking on the way
that every record belongs to the tenant and session that asked for it. No I/O here."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import cast

from chatstate.errors import ChatstateError, SchemaMismatch, SessionNotFound
from chatstate.model import Branch, Event, JSONValue, Session
from chatstate.store.codec import decode_event, loads
from chatstate.store.rules import from_us

__all__ = [
    "FIELD_SEP",
    "SCHEMA",
    "Keys",
    "branches_from",
    "event_from",
    "index_member",
    "integrity",
    "pairs",
    "parse_member",
    "session_from",
    "ttl_to_us",
]

log = logging.getLogger("chatstate.store.redis")

FIELD_SEP = "\x1f"  # separates the fields of an event record's header line
SCHEMA = "1"  # version of the session record layout


def ttl_to_us(ttl_seconds: float) -> int:
    return timedelta(seconds=ttl_seconds) // timedelta(microseconds=1)


def pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def integrity(what: str) -> ChatstateError:
    log.error("redis returned %s that belongs to another session; refusing it", what)
    return ChatstateError(f"redis returned {what} of another session; refusing to use it")


class Keys:
    """Key names. Only validated ids and our own prefix ever go into a key."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.expiry = f"{prefix}:g:{{expiry}}"
        self.idempotency = f"{prefix}:g:{{idempotency}}"

    def session(self, tenant: str, session: str) -> list[str]:
        """The seven keys of a session, in the order the scripts expect."""
        tag = f"{self.prefix}:s:{{{tenant}:{session}}}"
        return [f"{tag}:{part}" for part in ("m", "b", "h", "e", "i", "it", "st")]

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}:t:{{{tenant}}}:sessions"


def index_member(created_us: int, session: str, nonce: str) -> str:
    """Tenant index member: sorts by creation time, then id (``\\x01`` sorts below ids)."""
    return f"{created_us:020d}\x01{session}\x01{nonce}"


def parse_member(member: str) -> tuple[int, str, str]:
    created, session, nonce = member.split("\x01")
    return int(created), session, nonce


def session_from(rec: Mapping[str, str], tenant_id: str, session_id: str) -> Session:
    if not rec:
        raise SessionNotFound(f"session {session_id!r} not found")
    if rec.get("tenant") != tenant_id or rec.get("session") != session_id:
        raise integrity("a session record")
    if rec.get("v") != SCHEMA:
        raise SchemaMismatch(
            f"session record has layout {rec.get('v')!r}, this chatstate reads {SCHEMA}",
            fix="upgrade chatstate",
        )
    expires = rec["expires_us"]
    return Session(
        tenant_id=tenant_id,
        id=session_id,
        created_at=from_us(int(rec["created_us"])),
        updated_at=from_us(int(rec["updated_us"])),
        metadata=cast(dict[str, JSONValue], loads(rec["metadata"])),
        user_id=rec["user_id"] or None,
        ttl_seconds=cast(float, loads(rec["ttl"])) if rec["ttl"] else None,
        expires_at=from_us(int(expires)) if expires else None,
    )


def branches_from(info: Mapping[str, str], heads: Mapping[str, str]) -> dict[str, Branch]:
    out: list[tuple[int, Branch]] = []
    for name, packed in info.items():
        created, parent, fork, order = packed.split("|")
        out.append(
            (
                int(order),
                Branch(
                    name=name,
                    head_seq=int(heads[name]),
                    created_at=from_us(int(created)),
                    parent=parent or None,
                    fork_seq=int(fork) if parent else None,
                ),
            )
        )
    out.sort(key=lambda item: item[0])
    return {branch.name: branch for _, branch in out}


def event_from(
    raw: str | None,
    *,
    tenant_id: str,
    session_id: str,
    nonce: str,
    branch: str,
    seq: int,
) -> Event:
    if raw is None:  # the session went away between our two reads
        raise SessionNotFound(f"session {session_id!r} not found")
    header, newline, body = raw.partition("\n")
    parts = header.split(FIELD_SEP)
    if not newline or len(parts) != 8:
        raise integrity("a malformed event record")
    r_seq, r_nonce, r_tenant, r_session, r_branch, created, tokens, key = parts
    if r_tenant != tenant_id or r_session != session_id:
        raise integrity("an event")
    if r_nonce != nonce:  # deleted and created again between our two reads
        raise SessionNotFound(f"session {session_id!r} not found")
    if r_branch != branch or r_seq != str(seq):
        raise integrity("an event from another position")
    return decode_event(
        body,
        seq=seq,
        branch=branch,
        created_at=from_us(int(created)),
        token_count=int(tokens) if tokens else None,
        idempotency_key=key or None,
    )
