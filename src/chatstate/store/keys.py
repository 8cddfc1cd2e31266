"""Keys for encryption at rest: a provider protocol and a static, rotating key ring.

A :class:`KeyProvider` answers two questions: which key id encrypts new records of a
tenant now (:meth:`~KeyProvider.current`), and the 256-bit key for a tenant and a key id
(:meth:`~KeyProvider.key`), so that records written under an older key still open after
a rotation. Providers backed by a KMS implement the same two methods.

:class:`StaticKeys` holds master keys by id (the first is current) and gives each tenant
its own key, derived with HKDF-SHA256 from the master key and the tenant id: one tenant's
key opens nothing of another's. Rotation: put a new master key first and keep the old
ones; nothing stored is rewritten. Text form (``CHATSTATE_ENCRYPTION_KEYS``):
``k2:<base64 32 bytes>,k1:<base64 32 bytes>``; :func:`generate_key` makes one.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from chatstate.errors import ValidationError

__all__ = ["KeyNotFound", "KeyProvider", "StaticKeys", "generate_key"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")


class KeyNotFound(ValidationError):
    """A record names a key id the provider does not have."""


@runtime_checkable
class KeyProvider(Protocol):
    def current(self, tenant_id: str) -> str:
        """The key id new records of ``tenant_id`` are encrypted with."""
        ...

    def key(self, tenant_id: str, key_id: str) -> bytes:
        """The 32-byte key of ``tenant_id`` for ``key_id``; :class:`KeyNotFound` if none."""
        ...


def generate_key(key_id: str = "k1") -> str:
    """A new master key in the text form :meth:`StaticKeys.from_text` reads."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


class StaticKeys:
    """Master keys by id, the first current; per-tenant keys derived with HKDF-SHA256."""

    def __init__(self, masters: Mapping[str, bytes], *, current: str | None = None) -> None:
        if not masters:
            raise ValidationError("encryption needs at least one key")
        for key_id, secret in masters.items():
            if not _KEY_ID.match(key_id):
                raise ValidationError(f"key id {key_id!r} must be 1-32 of A-Z a-z 0-9 . _ -")
            if len(secret) != 32:
                raise ValidationError(f"key {key_id!r} must be 32 bytes, not {len(secret)}")
        self._masters = dict(masters)
        self._current = current if current is not None else next(iter(masters))
        if self._current not in self._masters:
            raise ValidationError(f"current key {self._current!r} is not among the keys")
        self._derived: dict[tuple[str, str], bytes] = {}

    @classmethod
    def from_text(cls, text: str) -> StaticKeys:
        """``id:base64,id:base64``: the first key is current."""
        masters: dict[str, bytes] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise ValidationError("encryption keys are id:base64, separated by commas")
            try:
                masters[key_id.strip()] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(f"key {key_id.strip()!r} is not base64") from None
        return cls(masters)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._masters)

    def current(self, tenant_id: str) -> str:
        return self._current

    def key(self, tenant_id: str, key_id: str) -> bytes:
        found = self._derived.get((tenant_id, key_id))
        if found is not None:
            return found
        master = self._masters.get(key_id)
        if master is None:
            raise KeyNotFound(f"no encryption key {key_id!r}")
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - optional extra
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"chatstate encryption at rest v1",
            info=b"tenant:" + tenant_id.encode(),
        ).derive(master)
        if len(self._derived) > 10_000:
            self._derived.clear()
        self._derived[(tenant_id, key_id)] = derived
        return derived
