"""``chatstate serve`` and ``chatstate keys create|list|revoke``.

The server needs the ``[server]`` extra (FastAPI, uvicorn, httpx); it is imported only
when one of these commands runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from chatstate.cli._commands import Context, opened, print_json
from chatstate.cli._errors import CliError, UsageError
from chatstate.model import JSONValue

if TYPE_CHECKING:
    from chatstate.server.config import ServerConfig

__all__ = ["register"]

Handler = Callable[[Context, argparse.Namespace], Coroutine[object, object, int]]
Command = Callable[..., argparse.ArgumentParser]
_KEYS_TENANT = "chatstate.keys"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    """Add ``serve`` and ``keys`` to the parser (``command`` is main's ``_command``)."""
    serve_cmd = command(sub, "serve", serve, "run the HTTP API and the chat gateway")
    serve_cmd.add_argument("--host", help="interface (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default 8080)")
    serve_cmd.add_argument(
        "--upstream-base-url",
        metavar="URL",
        help="OpenAI-compatible endpoint, ending in /v1 ($CHATSTATE_UPSTREAM_BASE_URL)",
    )
    serve_cmd.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve_cmd.add_argument("--context-budget", type=int, help="input tokens per gateway turn")
    serve_cmd.add_argument("--config", metavar="FILE", help="TOML file with a [server] table")

    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(keys_sub, "create", create_key, "a new key for --tenant, printed once")
    create.add_argument("--scopes", default="read,write", help="read,write,admin subset")
    create.add_argument(
        "--yes",
        action="store_true",
        help="confirm creating the first key, which ends development mode",
    )
    command(keys_sub, "list", list_keys, "every key: id, tenant, scopes")
    revoke = command(keys_sub, "revoke", revoke_key, "delete a key by its id")
    revoke.add_argument("key_id", help="the 16 hex digits after cs_")


def _config(ctx: Context, args: argparse.Namespace) -> ServerConfig:
    try:
        from chatstate.server.config import ServerConfig  # noqa: PLC0415 - optional extra
    except ModuleNotFoundError as exc:
        raise CliError(
            f"the server needs: pip install 'chatstate[server]' (missing {exc.name!r})"
        ) from exc
    overrides: dict[str, object] = {
        "database_url": ctx.database_url,
        "host": args.host,
        "port": args.port,
        "redis_url": ctx.cache_url,
        "upstream_base_url": args.upstream_base_url,
        "workers": args.workers,
        "context_budget": args.context_budget,
        "config": args.config,
    }
    return ServerConfig.load(overrides)


async def serve(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.as_json:
        raise UsageError("serve prints no result to format: --json applies to other commands")
    config = _config(ctx, args)
    import uvicorn  # noqa: PLC0415 - optional extra

    from chatstate.server.app import StartupRefused, create_app, decide_dev_mode  # noqa: PLC0415
    from chatstate.server.auth import KeyRing  # noqa: PLC0415

    async with opened(ctx, config.database_url) as store:
        try:
            await decide_dev_mode(config, KeyRing(store), announce=False)
        except StartupRefused as exc:
            raise UsageError(str(exc)) from exc
    ctx.err.write(f"chatstate serving on http://{config.host}:{config.port}\n")
    ctx.err.flush()
    if config.workers == 1:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config),
                host=config.host,
                port=config.port,
                log_level="warning",
                timeout_graceful_shutdown=10,
            )
        )
        await server.serve()
        return 0
    # Several processes: each worker builds its app from the environment.
    for name in ("database_url", "redis_url", "upstream_base_url", "context_budget", "host"):
        value = getattr(config, name)
        if value is not None:
            os.environ[f"CHATSTATE_{name.upper()}"] = str(value)
    uvicorn.run(  # blocks until the supervisor stops; the workers run their own loops
        "chatstate.server.app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return 0


async def create_key(ctx: Context, args: argparse.Namespace) -> int:
    from chatstate.server.auth import create_key as make  # noqa: PLC0415

    async with opened(ctx) as store:
        first = not (await store.list_sessions(tenant_id=_KEYS_TENANT, limit=1)).items
        if first and not args.yes:
            raise UsageError(
                "this would be the first API key in this database, which ends development "
                "mode: a `chatstate serve` on it stops accepting requests without a valid key "
                "(within key_cache_seconds, 10 s by default), and the key sees only tenant "
                f"{ctx.tenant!r}'s sessions (development mode uses tenant 'default'). "
                "Run again with --yes to create it"
            )
        key = await make(store, tenant=ctx.tenant, scopes=args.scopes)
    if ctx.as_json:
        print_json(ctx, {"tenant": ctx.tenant, "scopes": args.scopes, "key": key})
    else:
        ctx.out.write(key + "\n")
        ctx.err.write(f"key for tenant {ctx.tenant!r} ({args.scopes}); it is not shown again\n")
    return 0


async def list_keys(ctx: Context, args: argparse.Namespace) -> int:
    rows: list[dict[str, JSONValue]] = []
    async with opened(ctx) as store:
        cursor: str | None = None
        while True:
            page = await store.list_sessions(tenant_id=_KEYS_TENANT, limit=500, cursor=cursor)
            rows += [
                {
                    "id": s.id,
                    "tenant": s.metadata.get("tenant"),
                    "scopes": s.metadata.get("scopes"),
                    "created_at": s.created_at.isoformat(),
                }
                for s in page.items
            ]
            cursor = page.next_cursor
            if cursor is None:
                break
    if ctx.as_json:
        print_json(ctx, {"keys": list[JSONValue](rows)})
    else:
        for row in rows:
            ctx.out.write(f"{row['id']}  {row['tenant']}  {row['scopes']}  {row['created_at']}\n")
        if not rows:
            ctx.out.write("no keys (the server runs in development mode on loopback only)\n")
    return 0


async def revoke_key(ctx: Context, args: argparse.Namespace) -> int:
    from chatstate.server.auth import revoke_key as revoke  # noqa: PLC0415

    async with opened(ctx) as store:
        await revoke(store, key_id=args.key_id)
    if ctx.as_json:
        print_json(ctx, {"revoked": args.key_id})
    else:
        ctx.out.write(f"revoked {args.key_id}\n")
    return 0
