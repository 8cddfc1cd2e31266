"""Disk full: appends fail with a typed error and no acknowledgement; nothing acknowledged
is lost, and the store works again once there is space (RELIABILITY.md, test 19)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatstate.errors import BackendUnavailable
from chatstate.model import NewEvent
from chatstate.store.sqlite import SQLiteStore


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_then_space_returns(small_disk: Path) -> None:
    store = await SQLiteStore.open(small_disk / "full.db")
    await store.create_session(tenant_id="t", session_id="s")
    acknowledged: list[str] = []
    failures = 0
    for i in range(5000):
        text = f"{i:05d} " + "x" * 2000
        try:
            await store.append(
                tenant_id="t", session_id="s", events=[NewEvent.message("user", text)]
            )
        except BackendUnavailable:
            failures += 1
            if failures >= 3:
                break
        else:
            acknowledged.append(text)
    assert failures >= 3, "the disk never filled"
    assert acknowledged
    # A remount takes milliseconds; blocking the test loop for it is harmless.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # noqa: ASYNC221
    # The same store recovers without a restart.
    await store.append(tenant_id="t", session_id="s", events=[NewEvent.message("user", "after")])
    await store.close()
    reopened = await SQLiteStore.open(small_disk / "full.db")
    try:
        events = await reopened.read(tenant_id="t", session_id="s", limit=10_000)
    finally:
        await reopened.close()
    contents = [e.content for e in events]
    assert contents == [*acknowledged, "after"]
