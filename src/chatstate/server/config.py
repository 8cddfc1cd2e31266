"""The service's settings: one frozen value, from flags, the environment or a TOML file.

Precedence, highest first: command-line flags, ``CHATSTATE_*`` environment variables, the
``[server]`` table of the TOML file named by ``--config`` / ``CHATSTATE_CONFIG``, defaults.
A key of that table that is not a setting is an error naming it (a typo is never ignored).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from chatstate.errors import ValidationError
from chatstate.store.url import DEFAULT_DATABASE_URL

__all__ = ["ServerConfig", "is_loopback"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    """Redis hot tier in front of the database (``open_store(cache_url=...)``)."""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    upstream_base_url: str | None = None
    """An OpenAI-compatible endpoint ending in ``/v1``; the gateway answers 502 without it."""
    upstream_api_key: str | None = None
    upstream_timeout: float = 120.0
    context_budget: int | None = None
    """Input tokens for each gateway turn (default: the model's window minus its reply)."""
    max_body_bytes: int = 4 * 1024 * 1024
    max_events_per_append: int = 100
    rate_per_second: float = 50.0
    """Requests per second per key (token bucket; per process)."""
    rate_burst: int = 100
    response_ttl_seconds: float = 3600.0
    """How long a response's chunk log can be resumed; afterwards 410."""
    lease_seconds: float = 3.0
    """A producer that has not renewed its lease for this long is taken as dead."""
    stream_flush_seconds: float = 0.1
    """Streamed chunks are written to the response log at most this often (and at once
    for the first chunk): what a crash can lose, and the longest a chunk waits."""
    stream_flush_bytes: int = 4096
    """...or as soon as this many bytes of chunks wait."""
    key_cache_seconds: float = 10.0
    """How long a looked-up key (or "no keys exist") is trusted before the store is asked."""
    dev_mode: bool | None = None
    """None: decided at start (no keys and a loopback host). Tests set it."""
    encryption_keys: str | None = field(default=None, repr=False)
    """``id:base64,...`` (first current): encrypt at rest with
    :class:`~chatstate.store.encrypted.EncryptedStore` (``chatstate[encryption]``)."""
    max_in_flight: int = 64
    """Requests one process works on at once, gateway turns aside; more get 503 with
    ``Retry-After`` at once. 0 turns this bound off."""
    min_in_flight: int = 4
    """Where the bound on requests starts and the least it falls to: between this and
    ``max_in_flight`` it follows how late the event loop runs (see
    :mod:`chatstate.server.admission`). Equal to ``max_in_flight``: a fixed bound."""
    max_streams: int = 512
    """Gateway turns (``POST /v1/chat/completions``) one process serves at once, a stream
    counting while it streams; more get 503 with ``Retry-After``. 0 turns this bound off."""
    upstream_max_connections: int = 512
    """Connections the gateway's upstream client opens at most (each stream holds one)."""
    upstream_max_keepalive: int = 64

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_body_bytes < 1024 or self.rate_burst < 1:
            raise ValidationError("workers, max_body_bytes and rate_burst must be positive")
        if min(self.max_in_flight, self.max_streams) < 0 or self.upstream_max_connections < 1:
            raise ValidationError(
                "max_in_flight and max_streams must be >= 0, upstream_max_connections >= 1"
            )
        if self.min_in_flight < 1:
            raise ValidationError("min_in_flight must be >= 1")
        if self.rate_per_second <= 0 or self.response_ttl_seconds <= 0:
            raise ValidationError("rate_per_second and response_ttl_seconds must be positive")
        if self.stream_flush_seconds < 0 or self.stream_flush_bytes < 1:
            raise ValidationError("stream_flush_seconds and stream_flush_bytes must be positive")

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, *, env: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Defaults, then the TOML file, then the environment, then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        path = (overrides or {}).get("config") or env.get("CHATSTATE_CONFIG")
        if path:
            with Path(str(path)).open("rb") as handle:
                table = tomllib.load(handle).get("server", {})
            if not isinstance(table, dict):
                raise ValidationError(f"{path}: [server] must be a table")
            known = {f.name for f in fields(cls)}
            for key, value in table.items():
                name = key.replace("-", "_")
                if name not in known:
                    raise ValidationError(
                        f"{path}: unknown setting {key!r} in [server] "
                        f"(known: {', '.join(sorted(known))})"
                    )
                values[name] = value
        for f in fields(cls):
            raw = env.get(f"CHATSTATE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls()._with(values)

    def _with(self, values: Mapping[str, object]) -> ServerConfig:
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, object] = {}
        for name, value in values.items():
            if name not in types:
                continue
            changes[name] = _coerce(name, str(types[name]), value)
        return replace(self, **changes)  # type: ignore[arg-type]


def _coerce(name: str, kind: str, value: object) -> object:
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind.startswith("int"):
            return int(str(value))
        if kind.startswith("float"):
            return float(str(value))
    except ValueError as exc:
        raise ValidationError(f"setting {name}: {value!r} is not a {kind}") from exc
    return str(value)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
