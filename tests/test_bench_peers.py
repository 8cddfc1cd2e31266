"""``chatstate bench``: a tiny run of every system, peers skipped when not installed."""

from __future__ import annotations

import argparse
import importlib.util
import io

import pytest

from chatstate.bench import peers
from chatstate.cli.main import main


def test_conversation_is_deterministic_and_sized() -> None:
    pairs = peers.conversation(3, words=40, fact_rate=1.0)
    assert pairs == peers.conversation(3, words=40, fact_rate=1.0)
    user, reply = pairs[0]
    assert user != reply
    assert 40 <= len(user.split()) <= 40 + 4  # one order number per sentence at most
    assert "#" in user


def test_tiny_run_prints_every_system_or_why_not() -> None:
    parser = argparse.ArgumentParser()
    peers.add_arguments(parser)
    args = parser.parse_args(
        ["--sizes", "2,3", "--words", "30", "--postgres-url", "postgresql://nobody@127.0.0.1:1/x"]
    )
    out = io.StringIO()
    assert peers.run(args, out) == 0
    text = out.getvalue()
    for system in ("floor", "chatstate"):
        assert f"\n{system:<20}{3:>7,}" in text
    optional = {
        "agents-sqlite": "agents",
        "langgraph-sqlite": "langgraph.checkpoint.sqlite",
    }
    for system, module in optional.items():
        installed = importlib.util.find_spec(module.split(".")[0]) is not None
        if installed and module.startswith("langgraph"):
            installed = importlib.util.find_spec(module) is not None
        assert (f"\n{system:<20}{3:>7,}" in text) == installed
        assert (f"{system}: skipped" in text) != installed
    assert "langgraph-postgres: skipped" in text
    assert "chatstate vs" in text


def test_cli_bench_delegates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--sizes", "2", "--words", "20", "--systems", "floor,chatstate"]) == 0
    assert "floor" in capsys.readouterr().out
    assert main(["bench", "--systems", "nope"]) == 2
