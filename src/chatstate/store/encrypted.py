"""Encryption at rest as a wrapper over any :class:`~chatstate.store.protocol.Store`.

``EncryptedStore(store, keys)`` encrypts with AES-256-GCM (``pip install
'chatstate[encryption]'``), per tenant, with keys from a
:class:`~chatstate.store.keys.KeyProvider`:

* **Events.** Content, tool call names and arguments, ``name``, ``data`` and ``extra``
  become one ciphertext, stored as ``data = {"chatstate_enc": "<key id>:<base64>"}`` of an
  event with the same kind and role. Kept in clear, so the backend can order, page, fork
  and check pairing: ids, seqs, branch, timestamps, kind, role, tool call ids, token
  counts and idempotency keys.
* **State documents**: the whole document is one ciphertext under ``chatstate_enc``.
* **Response logs** of the gateway are sessions of the same store: encrypted the same way.
* Session metadata and user ids stay in clear: listings filter on them.

Each record carries its key id, so a rotation (a new current key) rewrites nothing: old
records open with their own key. The associated data binds a ciphertext to its place
(tenant, session, branch, seq, kind, role; for state: tenant, session, version, and the
branch unless it is ``main``), so a
ciphertext moved to another row does not open: it reads as an *unreadable* event (left
out of context, with its reason) or, for state, raises :class:`DecryptionFailed`.

The nonce is random, except in an append with an idempotency key, where it is derived
(HMAC-SHA256) from the key, the place, the idempotency key and the plaintext, so that a
retry stores the very same bytes and is recognised as a replay (a synthetic IV: equal
nonces only ever go with equal plaintexts). Events written before encryption was turned
on (no ``chatstate_enc``) are read as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from chatstate.errors import ChatstateError, IdempotencyMismatch, SeqConflict
from chatstate.model import (
    AppendResult,
    Event,
    JSONValue,
    NewEvent,
    SeqRange,
    StateDoc,
    ToolCall,
)
from chatstate.store.codec import dumps, encode_appends, encode_state, loads
from chatstate.store.keys import KeyProvider
from chatstate.store.protocol import Order, Store
from chatstate.store.rules import StoreLimits
from chatstate.store.wrapper import StoreWrapper

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ENVELOPE", "DecryptionFailed", "EncryptedStore"]

ENVELOPE = "chatstate_enc"
"""The ``data`` key (of an event) or state key that holds a ciphertext."""

_RETRIES = 50
_REPLAY_SCAN = 1000
"""Newest events searched for the original of an idempotent replay."""


class DecryptionFailed(ChatstateError):
    """A stored ciphertext did not open (wrong key, moved or altered)."""

    status = 500
    code = "decryption_failed"


def _aesgcm(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import (  # noqa: PLC0415
            AESGCM as Cipher,
        )
    except ModuleNotFoundError:  # pragma: no cover - the extra is not installed
        raise ChatstateError(
            "encryption needs the cryptography package: pip install 'chatstate[encryption]'"
        ) from None
    return Cipher(key)


def _limits(store: Store) -> StoreLimits:
    for name in ("config", "_config"):
        limits = getattr(getattr(store, name, None), "limits", None)
        if isinstance(limits, StoreLimits):
            return limits
    return StoreLimits()


def _place(*parts: str | int | None) -> bytes:
    return "\x1f".join(["" if p is None else str(p) for p in parts]).encode()


def _state_place(tenant_id: str, session_id: str, branch: str, version: int) -> bytes:
    """The associated data of a state document: for ``main`` exactly what it was before
    state was kept per branch (so older documents still open), the branch added for any
    other, so a document copied to another branch does not open."""
    if branch == "main":
        return _place(tenant_id, session_id, "state", version)
    return _place(tenant_id, session_id, "state", version, branch)


def _unsealed(e: Event, body: JSONValue) -> Event:
    """The event ``e`` with the fields its decrypted ``body`` holds."""
    if not isinstance(body, dict):
        raise DecryptionFailed("decrypted event is not an object")
    content = body.get("c")
    calls = cast("list[list[str]]", body.get("t") or [])
    # Built directly: dataclasses.replace costs more than the decryption itself.
    return Event(
        seq=e.seq,
        branch=e.branch,
        created_at=e.created_at,
        kind=e.kind,
        role=e.role,
        content=tuple(content) if isinstance(content, list) else content,  # type: ignore[arg-type]
        tool_calls=tuple(
            ToolCall(id=c.id, name=t[0], arguments=t[1], type=t[2])
            for c, t in zip(e.tool_calls, calls, strict=True)
        )
        if calls
        else (),
        tool_call_id=e.tool_call_id,
        name=cast("str | None", body.get("n")),
        data=cast("dict[str, JSONValue]", body.get("d") or {}),
        extra=cast("dict[str, JSONValue]", body.get("x") or {}),
        token_count=e.token_count,
        idempotency_key=e.idempotency_key,
        schema_version=e.schema_version,
    )


class EncryptedStore(StoreWrapper):
    """A :class:`Store` that encrypts what it writes to ``inner`` and decrypts what it reads;
    every other call passes through (:class:`StoreWrapper`)."""

    def __init__(self, inner: Store, keys: KeyProvider) -> None:
        super().__init__(inner)
        self.inner = inner
        self.keys = keys
        self._ciphers: dict[bytes, AESGCM] = {}

    # -- sealing ------------------------------------------------------------------------

    def _cipher(self, tenant_id: str, key_id: str) -> tuple[bytes, AESGCM]:
        key = self.keys.key(tenant_id, key_id)
        cipher = self._ciphers.get(key)
        if cipher is None:
            if len(self._ciphers) > 10_000:
                self._ciphers.clear()
            cipher = self._ciphers[key] = _aesgcm(key)
        return key, cipher

    def _seal(self, tenant_id: str, plain: bytes, aad: bytes, idem: str | None) -> str:
        key_id = self.keys.current(tenant_id)
        key, cipher = self._cipher(tenant_id, key_id)
        if idem is None:
            nonce = os.urandom(12)
        else:
            mac = hmac.new(key, b"nonce\x1e" + aad + b"\x1e" + idem.encode() + b"\x1e" + plain,
                           hashlib.sha256)  # fmt: skip
            nonce = mac.digest()[:12]
        sealed = nonce + cipher.encrypt(nonce, plain, aad)
        return f"{key_id}:{base64.b64encode(sealed).decode()}"

    def _open(self, tenant_id: str, envelope: object, aad: bytes) -> bytes:
        if not isinstance(envelope, str) or ":" not in envelope:
            raise DecryptionFailed("malformed ciphertext envelope")
        key_id, _, encoded = envelope.partition(":")
        try:
            sealed = binascii.a2b_base64(encoded, strict_mode=True)
            _, cipher = self._cipher(tenant_id, key_id)
            return cipher.decrypt(sealed[:12], sealed[12:], aad)
        except ChatstateError as exc:
            raise DecryptionFailed(f"cannot decrypt with key {key_id!r}: {exc.message}") from exc
        except Exception as exc:  # binascii.Error, cryptography's InvalidTag, a short body
            raise DecryptionFailed(f"cannot decrypt with key {key_id!r}") from exc

    def _seal_event(
        self, tenant_id: str, session_id: str, branch: str, seq: int, e: NewEvent, idem: str | None
    ) -> NewEvent:
        content: JSONValue = (
            [dict(p) for p in e.content] if isinstance(e.content, tuple) else e.content
        )
        body: dict[str, JSONValue] = {
            "c": content,
            "t": [[c.name, c.arguments, c.type] for c in e.tool_calls],
            "n": e.name,
            "d": dict(e.data),
            "x": dict(e.extra),
        }
        aad = _place(tenant_id, session_id, branch, seq, e.kind, e.role)
        sealed = self._seal(tenant_id, dumps(body).encode(), aad, idem)
        return NewEvent(
            kind=e.kind,
            role=e.role,
            tool_calls=tuple(ToolCall(id=c.id, name="-", arguments="") for c in e.tool_calls),
            tool_call_id=e.tool_call_id,
            data={ENVELOPE: sealed},
            token_count=e.token_count,
        )

    def _open_event(self, tenant_id: str, session_id: str, e: Event) -> Event:
        envelope = e.data.get(ENVELOPE) if e.unreadable is None else None
        if envelope is None:
            return e
        aad = _place(tenant_id, session_id, e.branch, e.seq, e.kind, e.role)
        try:
            return _unsealed(e, loads(self._open(tenant_id, envelope, aad)))
        except (DecryptionFailed, ValueError, TypeError, IndexError) as exc:
            problem = exc.message if isinstance(exc, ChatstateError) else "malformed plaintext"
            return replace(
                e,
                kind="marker",
                role=None,
                content=None,
                tool_calls=(),
                tool_call_id=None,
                name=None,
                data={"raw": dumps(dict(e.data)), "problem": problem},
                extra={},
                unreadable="unreadable",
            )

    def _opened(self, tenant_id: str, session_id: str, events: Sequence[Event]) -> list[Event]:
        return [self._open_event(tenant_id, session_id, e) for e in events]

    # -- the log ------------------------------------------------------------------------

    async def append(
        self,
        *,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str = "main",
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Seal each event for the seq it will get (the associated data names it): with
        ``expected_seq`` those are known; without, the head is read and the append retried
        when another writer got in first."""
        # What the inner store checks on the sealed events it must check on the plain ones:
        # text policy, shapes and sizes (a sealed event is about 4/3 of its plain size).
        encode_appends(events, _limits(self.inner))
        for attempt in range(_RETRIES):
            head = expected_seq
            if head is None:
                head = await self._head(tenant_id, session_id, branch)
            try:
                return await self._append_at(
                    tenant_id, session_id, events, branch, head, expected_seq, idempotency_key
                )
            except SeqConflict:
                if expected_seq is not None or attempt == _RETRIES - 1:
                    raise
            except IdempotencyMismatch:
                first = await self._replayed_first(tenant_id, session_id, branch, idempotency_key)
                if first is None:
                    raise
                return await self._append_at(
                    tenant_id, session_id, events, branch, first - 1, expected_seq, idempotency_key
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _append_at(
        self,
        tenant_id: str,
        session_id: str,
        events: Sequence[NewEvent],
        branch: str,
        head: int,
        expected_seq: int | None,
        idempotency_key: str | None,
    ) -> AppendResult:
        sealed = [
            self._seal_event(tenant_id, session_id, branch, head + 1 + i, e, idempotency_key)
            for i, e in enumerate(events)
        ]
        result = await self.inner.append(
            tenant_id=tenant_id,
            session_id=session_id,
            events=sealed,
            branch=branch,
            expected_seq=head if expected_seq is None else expected_seq,
            idempotency_key=idempotency_key,
        )
        opened = self._opened(tenant_id, session_id, result.events)
        return replace(result, events=tuple(opened))

    async def _head(self, tenant_id: str, session_id: str, branch: str) -> int:
        for info in await self.inner.list_branches(tenant_id=tenant_id, session_id=session_id):
            if info.name == branch:
                return info.head_seq
        return 0  # the inner append answers BranchNotFound

    async def _replayed_first(
        self, tenant_id: str, session_id: str, branch: str, key: str | None
    ) -> int | None:
        """The first seq the append with idempotency ``key`` wrote, if it is recent."""
        if key is None:
            return None
        recent = await self.inner.read(
            tenant_id=tenant_id, session_id=session_id, branch=branch,
            limit=_REPLAY_SCAN, order="desc",
        )  # fmt: skip
        seqs = [e.seq for e in recent if e.idempotency_key == key]
        return min(seqs) if seqs else None

    async def read(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = "main",
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        order: Order = "asc",
    ) -> list[Event]:
        events = await self.inner.read(
            tenant_id=tenant_id,
            session_id=session_id,
            branch=branch,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            order=order,
        )
        return self._opened(tenant_id, session_id, events)

    async def read_last(
        self, *, tenant_id: str, session_id: str, branch: str = "main", n: int
    ) -> list[Event]:
        events = await self.inner.read_last(
            tenant_id=tenant_id, session_id=session_id, branch=branch, n=n
        )
        return self._opened(tenant_id, session_id, events)

    async def read_ranges(
        self,
        *,
        tenant_id: str,
        session_id: str,
        branch: str = "main",
        ranges: Sequence[SeqRange],
    ) -> list[list[Event]]:
        found = await self.inner.read_ranges(
            tenant_id=tenant_id, session_id=session_id, branch=branch, ranges=ranges
        )
        return [self._opened(tenant_id, session_id, events) for events in found]

    # -- state --------------------------------------------------------------------------

    async def get_state(self, *, tenant_id: str, session_id: str, branch: str = "main") -> StateDoc:
        doc = await self.inner.get_state(tenant_id=tenant_id, session_id=session_id, branch=branch)
        envelope = doc.data.get(ENVELOPE)
        if envelope is None:
            return doc
        aad = _state_place(tenant_id, session_id, branch, doc.version)
        data = loads(self._open(tenant_id, envelope, aad))
        if not isinstance(data, dict):
            raise DecryptionFailed("decrypted state is not an object")
        return replace(doc, data=data)

    async def put_state(
        self,
        *,
        tenant_id: str,
        session_id: str,
        data: Mapping[str, JSONValue],
        expected_version: int,
        branch: str = "main",
    ) -> StateDoc:
        aad = _state_place(tenant_id, session_id, branch, expected_version + 1)
        plain = encode_state(data, _limits(self.inner)).encode()
        sealed = self._seal(tenant_id, plain, aad, None)
        doc = await self.inner.put_state(
            tenant_id=tenant_id,
            session_id=session_id,
            data={ENVELOPE: sealed},
            expected_version=expected_version,
            branch=branch,
        )
        return replace(doc, data=dict(data))
