"""Overload control, measured (RELIABILITY case 20): ``python -m chatstate.bench overload``.

Starts its own ``chatstate serve`` (SQLite in a temporary folder, development mode, the
rate limit out of the way, ``--max-in-flight`` as given) on a free loopback port, then
drives it with the load tool of :mod:`chatstate.bench.load` (70% appends, 30% reads of
a whole log) in three phases:

1. **saturation**: ``--clients`` closed-loop clients send back to back for ``--probe``
   seconds; the rate they get answered is the saturation rate S;
2. **half**: open loop at S/2 for ``--duration`` seconds: the p50 of the answers there is
   the baseline;
3. **overload**: open loop at 2S for ``--duration`` seconds: the admitted requests' p50
   and p99, the refused ones (503) and their p99.

It prints each phase as it ends, then the bar of issue 16: admitted p99 at 2S under 10x
the p50 at S/2, refused answers under 10 ms at p99, and no anomaly from the history
checker in any phase (nothing acknowledged lost, doubled or misplaced). The load tool
runs on the same machine as the server: on a machine with few cores its own work is part
of what is measured. Loopback only; stops by itself. Exit status 1 when the bar is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatstate.bench.load import LoadReport, run_load
from chatstate.server.config import ServerConfig
from chatstate.testing.backends_redis import free_port  # the project's loopback port helper

__all__ = ["OverloadResult", "main", "serve"]


@dataclass(frozen=True, slots=True)
class OverloadResult:
    saturation: float
    """Requests per second answered by the closed-loop clients."""
    half: LoadReport
    over: LoadReport

    @property
    def ratio(self) -> float:
        """Admitted p99 at twice saturation over the p50 at half saturation."""
        return self.over.percentile(0.99) / max(self.half.percentile(0.5), 1e-9)

    @property
    def met(self) -> bool:
        return (
            self.ratio < 10
            and self.over.percentile(0.99, refused=True) < 10
            and not self.half.anomalies
            and not self.over.anomalies
        )


@contextlib.contextmanager
def serve(folder: Path, max_in_flight: int, min_in_flight: int | None = None) -> Iterator[str]:
    """``chatstate serve`` on SQLite in ``folder``, in a child process; yields its URL."""
    import httpx  # noqa: PLC0415 - the [server] extra brings it

    port = free_port()
    env = {
        **os.environ,
        "CHATSTATE_MAX_IN_FLIGHT": str(max_in_flight),
        "CHATSTATE_MIN_IN_FLIGHT": str(min_in_flight or max_in_flight),
        "CHATSTATE_RATE_PER_SECOND": "1000000",
        "CHATSTATE_RATE_BURST": "1000000",
    }
    args = [sys.executable, "-m", "chatstate", "serve", "--port", str(port)]
    args += ["--database-url", f"sqlite:///{folder / 'overload.db'}"]
    url = f"http://127.0.0.1:{port}"
    with (folder / "server.log").open("ab") as log:
        # preexec_fn only pins the child to a core, before any thread exists in it.
        proc = subprocess.Popen(  # noqa: S603
            args,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=_server_core,  # noqa: PLW1509
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"chatstate serve exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("chatstate serve did not answer /healthz in 60 s")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _server_core() -> None:
    """In the server's child: the last core, so the load tool (pinned to the others)
    does not take the server's CPU (with one core both share it)."""
    cores = _cores()
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[-1]})


def _client_cores() -> None:
    cores = _cores()
    if len(cores) > 1:
        os.sched_setaffinity(0, set(cores[:-1]))


def _line(name: str, r: LoadReport) -> str:
    refused = r.errors.get("503", 0)
    other = {k: v for k, v in r.errors.items() if k != "503"}
    return (
        f"{name}: sent {r.sent:,} in {r.seconds:.1f} s, {r.ok:,} ok "
        f"({r.ok / max(r.seconds, 1e-9):,.0f}/s), p50 {r.percentile(0.5):.1f} ms, "
        f"p99 {r.percentile(0.99):.1f} ms; refused {refused:,} "
        f"(p99 {r.percentile(0.99, refused=True):.1f} ms); other errors {other or 'none'}; "
        f"anomalies {len(r.anomalies)}"
    )


def _bound(url: str) -> str:
    """The server's admission bound now (``/metrics``), for the phase lines."""
    import httpx  # noqa: PLC0415 - the [server] extra brings it

    with contextlib.suppress(httpx.HTTPError):
        for row in httpx.get(url + "/metrics", timeout=5).text.splitlines():
            if row.startswith("chatstate_admission_bound "):
                return row.split()[1]
    return "?"


async def measure(
    url: str, *, sessions: int, clients: int, probe: float, duration: float
) -> OverloadResult:
    sat = await run_load(url, sessions=sessions, rate=0, duration=probe, clients=clients, raw=True)
    saturation = sat.ok / max(sat.seconds, 1e-9)
    print(_line(f"saturation ({clients} clients)", sat) + f"; bound {_bound(url)}", flush=True)
    print(f"  saturation rate S = {saturation:,.0f} req/s", flush=True)
    wide: dict[str, Any] = {
        "connections": 1024,
        "raw": True,
    }  # the server, not the client's pool, must do the queueing
    half = await run_load(
        url, sessions=sessions, rate=saturation / 2, duration=duration, seed=2, **wide
    )
    print(
        _line(f"half (S/2 = {saturation / 2:,.0f} req/s)", half) + f"; bound {_bound(url)}",
        flush=True,
    )
    over = await run_load(
        url, sessions=sessions, rate=2 * saturation, duration=duration, seed=3, **wide
    )
    print(
        _line(f"overload (2S = {2 * saturation:,.0f} req/s)", over) + f"; bound {_bound(url)}",
        flush=True,
    )
    return OverloadResult(saturation, half, over)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatstate.bench overload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default = ServerConfig()
    parser.add_argument(
        "--max-in-flight", type=int, default=default.max_in_flight, help="the server's bound"
    )
    parser.add_argument(
        "--min-in-flight",
        type=int,
        default=default.min_in_flight,
        help="where the adaptive bound starts and its floor (= --max-in-flight: fixed)",
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="closed-loop clients of phase 1 (default: --min-in-flight, so that none is "
        "refused: a refused closed-loop client sends again at once, and the probe then "
        "measures refusals)",
    )
    parser.add_argument("--probe", type=float, default=5.0, help="seconds of phase 1")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of phases 2, 3")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="chatstate-overload-") as tmp,
        serve(Path(tmp), args.max_in_flight, args.min_in_flight) as url,
    ):
        print(
            f"overload: chatstate serve on SQLite, in flight between {args.min_in_flight} "
            f"and {args.max_in_flight}",
            flush=True,
        )
        result = asyncio.run(
            measure(
                url,
                sessions=args.sessions,
                clients=args.clients or args.min_in_flight,
                probe=args.probe,
                duration=args.duration,
            )
        )
    print(
        f"bar: admitted p99 at 2S / p50 at S/2 = {result.ratio:.1f}x (under 10x: "
        f"{'yes' if result.ratio < 10 else 'no'}); refused p99 "
        f"{result.over.percentile(0.99, refused=True):.1f} ms (under 10 ms: "
        f"{'yes' if result.over.percentile(0.99, refused=True) < 10 else 'no'}); anomalies "
        f"{len(result.half.anomalies) + len(result.over.anomalies)}: "
        f"{'met' if result.met else 'NOT met'}"
    )
    return 0 if result.met else 1
