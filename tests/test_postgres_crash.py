"""SIGKILL a private PostgreSQL server during concurrent appends, restart it, and check that
every acknowledged append survived, in order, once, and that the store reconnected itself.

The server is started from ``initdb`` in a temporary folder on a free loopback port (as the
``postgres`` OS user when run as root, since PostgreSQL refuses to run as root), with
``synchronous_commit=on`` and ``fsync=on``. Everything it starts is killed and removed at
the end, whatever happens. Under ``CI=true`` it must run; elsewhere it skips without initdb.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chatstate.errors import BackendUnavailable
from chatstate.model import NewEvent
from chatstate.testing.backends import in_ci

psycopg = pytest.importorskip("psycopg")
from chatstate.store.postgres import PostgresStore  # noqa: E402 - needs psycopg

pytestmark = pytest.mark.postgres

SESSIONS = 4
WORKERS = 8
KILLS = 2


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class Server:
    """A throwaway PostgreSQL cluster: initdb, start, SIGKILL, restart, remove."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="chatstate-pgcrash-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            self._as = ["runuser", "-u", "postgres", "--"]
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-instructions"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [*self._as, str(self.bindir / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.root}", "-c", "fsync=on",
                 "-c", "synchronous_commit=on", "-c", "max_connections=40",
                 "-c", "shared_buffers=16MB"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.1)
            else:
                return

    def _pids(self) -> list[int]:
        """The postmaster and every process it started."""
        pidfile = self.data / "postmaster.pid"
        try:
            postmaster = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = Path(stat).read_text()
                if int(text.rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(Path(stat).parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes: a crash, not a shutdown."""
        pids = self._pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids):
            assert time.monotonic() < deadline, "PostgreSQL processes survived SIGKILL"
            time.sleep(0.02)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[Server]:
    bindir = _bindir()
    if bindir is None:
        if in_ci():
            pytest.fail("initdb is required under CI=true (install PostgreSQL server binaries)")
        pytest.skip("initdb not found: the PostgreSQL crash test needs the server binaries")
    srv = Server(bindir)
    try:
        srv.init()
        srv.start()
        yield srv
    finally:
        srv.remove()


@dataclass
class Log:
    acked: list[tuple[str, int, list[str]]] = field(default_factory=list)
    """(session, first_seq, contents) of every append that returned successfully."""
    unknown: int = 0
    goal: int | None = None
    """Set ``reached`` once this many appends are acknowledged."""
    reached: asyncio.Event = field(default_factory=asyncio.Event)


async def _worker(
    store: PostgresStore, wid: int, stop: asyncio.Event, log: Log, rng: random.Random
) -> None:
    keyed = wid % 2 == 0  # half retry with an idempotency key, half never retry
    session = f"s{wid % SESSIONS}"
    n = 0
    while not stop.is_set():
        contents = [f"w{wid}-{n}-{k}" for k in range(rng.randint(1, 3))]
        while True:
            try:
                result = await store.append(
                    tenant_id="crash",
                    session_id=session,
                    events=[NewEvent.message("user", c) for c in contents],
                    idempotency_key=f"w{wid}-{n}" if keyed else None,
                )
            except BackendUnavailable:
                if keyed and not stop.is_set():
                    await asyncio.sleep(0.05)
                    continue  # same key, same payload: replays if it was written
                log.unknown += 1
                await asyncio.sleep(0.05)
                break
            log.acked.append((session, result.first_seq, [str(e.content) for e in result.events]))
            if log.goal is not None and len(log.acked) >= log.goal:
                log.reached.set()
            assert [e.content for e in result.events] == contents
            break
        n += 1


async def test_sigkill_postgres_loses_no_acknowledged_append(server: Server) -> None:
    rng = random.Random(20261125)
    async with asyncio.timeout(150):
        store = await PostgresStore.open(
            server.url, retry_for=3.0, max_size=WORKERS, statement_timeout=10
        )
        try:
            for s in range(SESSIONS):
                await store.create_session(tenant_id="crash", session_id=f"s{s}")
            log = Log()
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(_worker(store, w, stop, log, random.Random(rng.random())))
                for w in range(WORKERS)
            ]
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.5, 1.0))
                before = len(log.acked)
                await asyncio.to_thread(server.kill)
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                await asyncio.to_thread(server.start)
                assert before > 0, "no append was acknowledged before the kill"
            # The same store object works again after the restart, with no help.
            restarted = len(log.acked)
            log.goal = restarted + 50
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(log.reached.wait(), timeout=30)
            stop.set()
            await asyncio.gather(*workers)
            assert len(log.acked) >= restarted + 50, "appends did not resume after the restart"
            logs = {}
            for s in range(SESSIONS):
                events = []
                while page := await store.read(
                    tenant_id="crash", session_id=f"s{s}", after_seq=len(events), limit=1000
                ):
                    events += page
                logs[f"s{s}"] = events
        finally:
            await store.close()

    everything: list[str] = []
    for name, events in logs.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), name
        everything += [str(e.content) for e in events]
    assert len(everything) == len(set(everything)), "an append was written twice"
    for session, first, contents in log.acked:
        stored = [str(e.content) for e in logs[session][first - 1 : first - 1 + len(contents)]]
        assert stored == contents, f"acknowledged append {contents[0]} is missing or moved"
    for wid in range(WORKERS):  # each writer's appends appear in the order it made them
        mine = [c for c in everything if c.startswith(f"w{wid}-")]
        order = [(int(c.split("-")[1]), int(c.split("-")[2])) for c in mine]
        assert order == sorted(order), f"writer {wid} was reordered"
    assert len(log.acked) > 50
