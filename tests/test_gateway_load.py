"""``python -m chatstate.bench load --gateway``: a short run completes turns, checks the
history and counts the store calls of each turn."""

from __future__ import annotations

from chatstate.bench import load
from chatstate.bench.gateway_load import run_gateway_load


async def test_a_short_gateway_load_counts_calls_and_finds_no_anomaly() -> None:
    report = await run_gateway_load(sessions=2, duration=1.0, chunks=30, chunk_delay=0.0)
    assert report.turns >= 2 and not report.failed
    assert report.anomalies == []
    # input, log, window, state, flushes, answer: far from one call per chunk
    assert 6 <= report.request_calls / report.turns < 30
    assert report.calls_by_method["append"] >= 2 * report.turns
    assert "consistency: 0 anomalies" in report.lines()


def test_the_load_command_has_a_gateway_mode() -> None:
    code = load.main(["--gateway", "--sessions", "1", "--duration", "0.5", "--chunks", "10"])
    assert code == 0
