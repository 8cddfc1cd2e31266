"""Open a store from a URL, the one way the library, the CLI and the server configure storage.

==============================  ===========================================================
``sqlite:///relative/path.db``  embedded SQLite (the default: ``sqlite:///./chatstate.db``)
``sqlite:////absolute/path.db`` the same, absolute path
``memory://``                   in-process, not durable (tests, experiments)
``postgresql://user@host/db``   PostgreSQL (``pip install 'chatstate[postgres]'``)
``redis://host:6379/0``         Redis as the store (``pip install 'chatstate[redis]'``)
``redis+cluster://host:7000``   Redis Cluster, any node as the seed
==============================  ===========================================================

``cache_url`` (a ``redis://`` or ``redis+cluster://`` URL) wraps the store in the Redis hot
tier: the database stays the system of record and Redis caches each session's head and
recent window.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import urlsplit, urlunsplit

from chatstate.errors import ValidationError
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig

__all__ = ["DEFAULT_DATABASE_URL", "open_store", "redact"]

DEFAULT_DATABASE_URL = "sqlite:///./chatstate.db"

Opener = Callable[[str, StoreConfig], Awaitable[Store]]

# scheme -> (module, function, extra that installs its driver). Modules are imported only
# when their scheme is used, so a missing optional driver costs nothing until then.
_OPENERS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("chatstate.store.backends.sqlite.store", "open_sqlite_url", None),
    "memory": ("chatstate.store.backends.memory", "open_memory_url", None),
    "postgresql": ("chatstate.store.backends.postgres.store", "open_postgres_url", "postgres"),
    "postgres": ("chatstate.store.backends.postgres.store", "open_postgres_url", "postgres"),
    "redis": ("chatstate.store.backends.redis.store", "open_redis_url", "redis"),
    "rediss": ("chatstate.store.backends.redis.store", "open_redis_url", "redis"),
    "redis+cluster": ("chatstate.store.backends.redis.store", "open_redis_url", "redis"),
}
_CACHE = ("chatstate.store.backends.redis.tiered", "open_tiered", "redis")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _load(module: str, function: str, extra: str | None) -> Callable[..., Awaitable[Store]]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith("chatstate"):
            raise
        raise ValidationError(
            f"this URL needs the optional driver: pip install 'chatstate[{extra}]' "
            f"(missing module {exc.name!r})"
        ) from exc
    return cast(Callable[..., Awaitable[Store]], getattr(mod, function))


async def open_store(
    url: str = DEFAULT_DATABASE_URL,
    *,
    cache_url: str | None = None,
    config: StoreConfig | None = None,
) -> Store:
    """Open (and, where needed, migrate-check) the store that ``url`` names.

    Close it with ``await store.close()``.
    """
    config = config or StoreConfig()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _OPENERS:
        raise ValidationError(
            f"unsupported database URL {redact(url)!r}: use one of "
            + ", ".join(f"{s}://" for s in sorted(_OPENERS))
        )
    store = await _load(*_OPENERS[scheme])(url, config)
    if cache_url is None:
        return store
    try:
        return await _load(*_CACHE)(store, cache_url, config)
    except BaseException:
        await store.close()
        raise
