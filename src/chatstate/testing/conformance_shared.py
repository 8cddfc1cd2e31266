"""Contract tests across store instances: the same database reached through two stores
(two connections, two pools, two Redis clients) and, where the backend gives a URL, two
OS processes. A backend that drops the transaction around its append fails them.

Gated on ``Capabilities.shared``: a backend that does not declare it is skipped here.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from chatstate.errors import IdempotencyMismatch, SeqConflict, StateVersionConflict
from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.testing.backends import process_url
from chatstate.testing.plugin import MakePeers

__all__ = [
    "test_shared_concurrent_appends_are_dense",
    "test_shared_expected_seq_one_wins",
    "test_shared_idempotent_retries_write_once",
    "test_shared_state_writes_one_wins",
    "test_two_processes_append_densely",
]

T = "acme"


def _msg(text: str) -> NewEvent:
    return NewEvent.message("user", text)


async def _setup(peers: list[Store]) -> None:
    await peers[0].create_session(tenant_id=T, session_id="s")


async def test_shared_expected_seq_one_wins(make_peers: MakePeers) -> None:
    """Two instances race with the same expected_seq, 200 times: one wins each time."""
    peers = await make_peers()
    await _setup(peers)
    for head in range(200):
        outcomes = await asyncio.gather(
            *(
                store.append(
                    tenant_id=T, session_id="s", events=[_msg(f"{head}-{i}")], expected_seq=head
                )
                for i, store in enumerate(peers)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, SeqConflict)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
    events = await peers[1].read(tenant_id=T, session_id="s", limit=1000)
    assert [e.seq for e in events] == list(range(1, 201))
    assert [str(e.content).split("-")[0] for e in events] == [str(i) for i in range(200)]


async def test_shared_concurrent_appends_are_dense(make_peers: MakePeers) -> None:
    """Appends without expectation through both instances: every one lands, seqs dense,
    each append's events adjacent."""
    peers = await make_peers()
    await _setup(peers)
    results = await asyncio.gather(
        *(
            peers[i % 2].append(tenant_id=T, session_id="s", events=[_msg(f"{i}a"), _msg(f"{i}b")])
            for i in range(60)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed
    events = await peers[0].read(tenant_id=T, session_id="s", limit=1000)
    assert [e.seq for e in events] == list(range(1, 121))
    for first in range(0, 120, 2):
        assert str(events[first].content)[:-1] == str(events[first + 1].content)[:-1]
    assert sorted(str(e.content) for e in events) == sorted(
        f"{i}{s}" for i in range(60) for s in "ab"
    )


async def test_shared_idempotent_retries_write_once(make_peers: MakePeers) -> None:
    """The same keyed append sent through both instances at once is written once; the
    other answer is its replay. A different payload under a used key is refused."""
    peers = await make_peers()
    await _setup(peers)
    for k in range(40):
        outcomes = await asyncio.gather(
            *(
                store.append(
                    tenant_id=T, session_id="s", events=[_msg(f"turn {k}")], idempotency_key=f"k{k}"
                )
                for store in peers
            ),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failed, failed
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        assert sorted(o.replayed for o in done) == [False, True]
        assert done[0].first_seq == done[1].first_seq == k + 1
    events = await peers[1].read(tenant_id=T, session_id="s", limit=1000)
    assert [e.content for e in events] == [f"turn {k}" for k in range(40)]
    with pytest.raises(IdempotencyMismatch):
        await peers[1].append(
            tenant_id=T, session_id="s", events=[_msg("other")], idempotency_key="k0"
        )


async def test_shared_state_writes_one_wins(make_peers: MakePeers) -> None:
    peers = await make_peers()
    await _setup(peers)
    for version in range(40):
        outcomes = await asyncio.gather(
            *(
                store.put_state(
                    tenant_id=T, session_id="s", data={"w": i}, expected_version=version
                )
                for i, store in enumerate(peers)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, StateVersionConflict) for o in outcomes) == 1, outcomes
    assert (await peers[1].get_state(tenant_id=T, session_id="s")).version == 40


async def test_two_processes_append_densely(make_peers: MakePeers) -> None:
    """Two OS processes append to one session on one database: contested appends with
    ``expected_seq``, plain appends, and keyed retries. Every write lands once, in order."""
    peers = await make_peers()
    url = process_url(peers[0])
    if url is None:
        pytest.skip("the backend gives no URL for another process")
    await _setup(peers)
    env = {**os.environ, "CHATSTATE_CHILD_URL": url}
    names = ("p", "q")
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "chatstate.testing.child", T, "s", name),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in names
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(child.communicate() for child in children)), timeout=300
    )
    won: dict[str, int] = {}
    for name, child, (out, err) in zip(names, children, outputs, strict=True):
        assert child.returncode == 0, err.decode()[-2000:]
        won[name] = int(out.decode().split()[-1])
    events = await peers[1].read(tenant_id=T, session_id="s", limit=10_000)
    assert [e.seq for e in events] == list(range(1, 151))  # 2 x (30 + 30) + 30 keyed, once
    texts = [str(e.content) for e in events]
    for name in names:
        contested = [t for t in texts if t.startswith(f"{name}:won:")]
        assert contested == [f"{name}:won:{i}" for i in range(30)]
        assert won[name] == 30
        plain = [t for t in texts if t.startswith(f"{name}:plain:")]
        assert plain == [f"{name}:plain:{i}" for i in range(30)]
    keyed = [t for t in texts if t.startswith("keyed:")]
    assert keyed == [f"keyed:{k}" for k in range(30)]
