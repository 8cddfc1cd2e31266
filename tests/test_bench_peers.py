"""``chatstate bench``: a tiny run of every system, peers skipped when not installed."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from pathlib import Path

import pytest

from chatstate.bench import _peer_drivers as drivers
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
        "langgraph-chatstate": "langgraph.graph",  # the [langgraph] extra
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


def test_the_encrypted_row_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``chatstate-encrypted``: the same turns behind EncryptedStore (``[encryption]``)."""
    argv = ["bench", "--sizes", "3", "--words", "20", "--systems", "chatstate-encrypted"]
    assert main([*argv, "--tmp", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("chatstate")]
    assert rows and rows[0].split()[:2] == ["chatstate-encrypted", "3"]


def test_rows_come_as_sizes_finish_and_json_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each row is written when its system reaches the size, before the next system runs;
    ``--json`` writes one object a line, the ratios last."""
    seen: list[str] = []
    turn = drivers.Chatstate.turn

    def counted(self: drivers.Chatstate, i: int, user: str, reply: str) -> None:
        seen.append("chatstate turn")
        turn(self, i, user, reply)

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            seen.append("write")
            return super().write(text)

    monkeypatch.setattr(drivers.Chatstate, "turn", counted)
    parser = argparse.ArgumentParser()
    peers.add_arguments(parser)
    args = parser.parse_args(["--sizes", "2,3", "--words", "20", "--systems", "floor,chatstate"])
    out = Out()
    assert peers.run(args, out, as_json=True) == 0
    assert "write" in seen[: seen.index("chatstate turn")]  # floor's rows came first
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    rows = [(r["system"], r["turns"]) for r in lines if "turns" in r and "other" not in r]
    assert rows == [("floor", 2), ("floor", 3), ("chatstate", 2), ("chatstate", 3)]
    assert all(r["disk_over_raw"] > 0 for r in lines[:4])
    assert "ratios" in lines[-1] and lines[-1]["ratios"][0]["other"] == "floor"
