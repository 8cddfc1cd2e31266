"""The CLI reaches the Redis hot tier with --redis-url (or CHATSTATE_REDIS_URL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from chatstate.cli import main
from chatstate.testing.backends_redis import redis_url, require


def test_redis_url_puts_the_tier_in_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require("tiered")
    from chatstate.store.redis import connect_client
    from chatstate.testing.backends_redis import drop_prefix

    prefix = f"cscli{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CHATSTATE_REDIS_URL", f"{redis_url()}?prefix={prefix}")
    db = f"sqlite:///{tmp_path}/tier.db"
    try:
        assert main(["demo", "--json", "--database-url", db]) == 0
        sid = json.loads(capsys.readouterr().out)["id"]
        assert main(["sessions", "show", sid, "--last", "2", "--database-url", db]) == 0
        assert "#14" in capsys.readouterr().out

        async def cached_keys() -> int:
            client, _ = connect_client(redis_url())
            try:
                return sum([1 async for _ in client.scan_iter(match=f"{prefix}*")])
            finally:
                await client.aclose()

        assert asyncio.run(cached_keys()) > 0
    finally:

        async def clean() -> None:
            client, _ = connect_client(redis_url())
            await drop_prefix(client, prefix)
            await client.aclose()

        asyncio.run(clean())
