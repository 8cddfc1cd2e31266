"""Conformance registration of the Redis backends, and local Redis servers for tests.

* ``redis``: the server at ``CHATSTATE_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``);
  each store gets its own key prefix, and its keys are deleted afterwards.
* ``redis-cluster``: a real 3-master cluster on free loopback ports, started once per test
  session on first use (``redis-server --cluster-enabled yes`` + ``redis-cli --cluster
  create``) and stopped at exit; or the cluster at ``CHATSTATE_REDIS_CLUSTER_URL``.
* ``tiered``: the Redis hot tier in front of a system of record: the backend named by
  ``CHATSTATE_TIERED_SOR``, by default ``sqlite``.

redis-py is imported only when a store is opened, so this module imports without it.
:class:`LocalRedis` and :class:`LocalCluster` start private servers (crash tests use them).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig
from chatstate.testing.registry import (
    REGISTRY,
    BackendSpec,
    PeerOpener,
    in_ci,
    peer_opener,
    register,
    share,
)

__all__ = [
    "LocalCluster",
    "LocalRedis",
    "drop_prefix",
    "free_port",
    "redis_url",
    "require",
    "require_redis_server",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    return os.environ.get("CHATSTATE_REDIS_URL", DEFAULT_URL)


def _driver_missing() -> str | None:
    try:
        import redis.asyncio  # noqa: F401, PLC0415 - optional driver
    except ImportError:
        return "redis-py is not installed (pip install 'chatstate[redis]')"
    return None


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING on ``host:port`` (no driver needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _tcp_unavailable(url: str) -> str | None:
    from urllib.parse import urlsplit  # noqa: PLC0415

    missing = _driver_missing()
    if missing:
        return missing
    parts = urlsplit(url.replace("redis+cluster://", "redis://"))
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not ping(host, port):
        return f"no Redis server answers at {host}:{port} (set CHATSTATE_REDIS_URL)"
    return None


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


async def drop_prefix(client: object, prefix: str) -> None:
    """Delete every key under ``prefix`` (our own prefix, never user input)."""
    scan = client.scan_iter  # type: ignore[attr-defined]
    batch: list[str] = []
    async for key in scan(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await client.unlink(*batch)  # type: ignore[attr-defined]
            batch = []
    if batch:
        await client.unlink(*batch)  # type: ignore[attr-defined]


def free_port(*, bus: bool = False) -> int:
    """A free loopback port (and, with ``bus``, port + 10000 free too, for a cluster)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as sock, contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair found")


class LocalRedis:
    """A private ``redis-server`` on a free loopback port, with its data in ``folder``.

    ``kill()`` sends SIGKILL (no shutdown save); ``start()`` again reuses the folder and
    port, so the server recovers from its own AOF/RDB files.
    """

    def __init__(self, folder: Path, *, args: Sequence[str] = (), port: int | None = None) -> None:
        self.folder = folder
        self.args = list(args)
        self.port = port or free_port(bus="--cluster-enabled" in self.args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not on PATH")
        command = [
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--daemonize",
            "no",
            "--save",
            "",
            *self.args,
        ]
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        log.close()
        deadline = time.monotonic() + timeout
        while not ping("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to save or flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cli(self, *args: str, timeout: float = 20.0) -> str:
        """Run ``redis-cli -p PORT args...`` and return its output."""
        cli = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(  # noqa: S603
            [cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout + done.stderr


class LocalCluster:
    """Three (or more) ``redis-server --cluster-enabled yes`` masters on loopback."""

    def __init__(self, folder: Path, *, masters: int = 3, args: Sequence[str] = ()) -> None:
        self.folder = folder
        self.nodes: list[LocalRedis] = []
        for index in range(masters):
            node_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                *args,
            ]
            self.nodes.append(LocalRedis(folder / f"node{index}", args=node_args))

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def _create(self, timeout: float) -> None:
        out = self.nodes[0].cli(
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            timeout=timeout,
        )
        if "[OK] All 16384 slots covered" not in out:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out[-2000:]}")

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start node ``index`` again (after :meth:`LocalRedis.kill`) on its own files."""
        self.nodes[index].start()
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while True:
            states = [node.cli("cluster", "info", timeout=5) for node in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout} s: {states}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# -- the shared cluster for the conformance suite ------------------------------------------

_cluster: LocalCluster | None = None
_cluster_error: str | None = None


def _shared_cluster_url() -> str | None:
    """Start the shared cluster on first use; ``None`` (and a reason) when it can't run."""
    global _cluster, _cluster_error  # noqa: PLW0603 - one cluster per test session
    configured = os.environ.get("CHATSTATE_REDIS_CLUSTER_URL")
    if configured:
        return configured
    if _cluster is not None:
        return _cluster.url
    if _cluster_error is not None:
        return None
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        _cluster_error = "redis-server and redis-cli are not on PATH"
        return None
    folder = Path(tempfile.mkdtemp(prefix="chatstate-cluster-"))
    cluster = LocalCluster(folder)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        _cluster_error = f"could not start a local Redis Cluster: {exc}".splitlines()[0]
        return None

    def cleanup() -> None:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(cleanup)
    _cluster = cluster
    return cluster.url


def _cluster_unavailable() -> str | None:
    missing = _driver_missing()
    if missing:
        return missing
    if _shared_cluster_url() is None:
        return _cluster_error or "no Redis Cluster"
    return None


# -- openers --------------------------------------------------------------------------------


@asynccontextmanager
async def _open_url(url: str, config: StoreConfig) -> AsyncIterator[Store]:
    from chatstate.store.backends.redis.store import open_redis_url  # noqa: PLC0415 - optional driver

    prefix = f"cst{uuid.uuid4().hex[:12]}"
    store = await open_redis_url(_with_prefix(url, prefix), config)
    try:
        shared_url = _with_prefix(url, prefix)
        yield share(store, lambda: _open_peer(shared_url, config), url=shared_url)
    finally:
        try:
            await drop_prefix(store.client, prefix)
        finally:
            await store.close()


@asynccontextmanager
async def _open_peer(url: str, config: StoreConfig) -> AsyncIterator[Store]:
    from chatstate.store.backends.redis.store import open_redis_url  # noqa: PLC0415

    store = await open_redis_url(url, config)
    try:
        yield store
    finally:
        await store.close()


def _open_redis(config: StoreConfig, _tmp: Path) -> contextlib.AbstractAsyncContextManager[Store]:
    return _open_url(redis_url(), config)


def _open_cluster(config: StoreConfig, _tmp: Path) -> contextlib.AbstractAsyncContextManager[Store]:
    url = _shared_cluster_url()
    if url is None:
        raise RuntimeError(_cluster_error or "no Redis Cluster")
    return _open_url(url, config)


def _sor_spec(name: str | None = None) -> BackendSpec:
    """The system of record under the tiered backend."""
    name = name or os.environ.get("CHATSTATE_TIERED_SOR", "sqlite")
    spec = REGISTRY.get(name)
    if spec is None or spec.unavailable() is not None:
        spec = REGISTRY["memory"]
    return spec


@asynccontextmanager
async def _open_tiered(
    config: StoreConfig, tmp: Path, sor_name: str | None = None
) -> AsyncIterator[Store]:
    from chatstate.store.backends.redis.store import connect_client  # noqa: PLC0415 - optional driver
    from chatstate.store.backends.redis.tiered import TieredStore  # noqa: PLC0415

    prefix = f"cst{uuid.uuid4().hex[:12]}"
    async with _sor_spec(sor_name).open(config, tmp) as sor:
        client, _ = connect_client(redis_url())
        store = TieredStore(sor, client, config=config, prefix=prefix, owns_store=False)
        sor_peer = peer_opener(sor)
        if sor_peer is not None:
            share(store, lambda: _tier_peer(sor_peer, prefix, config))
        try:
            yield store
        finally:
            try:
                await drop_prefix(client, prefix)
            finally:
                await store.close()


@asynccontextmanager
async def _tier_peer(
    sor_peer: PeerOpener, prefix: str, config: StoreConfig
) -> AsyncIterator[Store]:
    from chatstate.store.backends.redis.store import connect_client  # noqa: PLC0415
    from chatstate.store.backends.redis.tiered import TieredStore  # noqa: PLC0415

    async with sor_peer() as sor:
        client, _ = connect_client(redis_url())
        store = TieredStore(sor, client, config=config, prefix=prefix, owns_store=False)
        try:
            yield store
        finally:
            await store.close()


register(
    BackendSpec(name="redis", open=_open_redis, unavailable=lambda: _tcp_unavailable(redis_url()))
)
register(BackendSpec(name="redis-cluster", open=_open_cluster, unavailable=_cluster_unavailable))
register(
    BackendSpec(name="tiered", open=_open_tiered, unavailable=lambda: _tcp_unavailable(redis_url()))
)


def _tiered_postgres_unavailable() -> str | None:
    return _tcp_unavailable(redis_url()) or REGISTRY["postgres"].unavailable()


# The fleet deployment: PostgreSQL as the system of record, Redis as its hot tier.
register(
    BackendSpec(
        name="postgres+redis",
        open=lambda config, tmp: _open_tiered(config, tmp, "postgres"),
        unavailable=_tiered_postgres_unavailable,
    )
)


def require(name: str) -> BackendSpec:
    """The registered backend ``name`` for a test: skipped with its reason when its server
    is unreachable, an error instead under ``CI=true``."""
    import pytest  # noqa: PLC0415 - only tests call this

    spec = REGISTRY[name]
    reason = spec.unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"{name} is required under CI=true: {reason}")
        pytest.skip(reason)
    return spec


def require_redis_server() -> None:
    """Skip (fail under ``CI=true``) unless redis-server, redis-cli and redis-py are here."""
    import pytest  # noqa: PLC0415 - only tests call this

    reason = _driver_missing()
    if reason is None and (
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None
    ):
        reason = "redis-server and redis-cli are not on PATH"
    if reason is not None:
        if in_ci():
            pytest.fail(f"a private redis-server is required under CI=true: {reason}")
        pytest.skip(reason)
