"""``chatstate context``: the manifest as a table, or messages and manifest as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatstate.cli import main


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--database-url", f"sqlite:///{db}"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    monkeypatch.delenv("CHATSTATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHATSTATE_TENANT", raising=False)
    db = tmp_path / "ctx.db"
    code, out, _ = run(capsys, db, "demo", "--json")
    assert code == 0
    return db, json.loads(out)["id"]


def test_json_gives_messages_and_manifest(
    session: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, sid = session
    code, out, err = run(
        capsys,
        db,
        "context",
        sid,
        "--json",
        "--budget",
        "400",
        "--message",
        "When do I get my money back?",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["messages"][-1] == {"role": "user", "content": "When do I get my money back?"}
    manifest = doc["manifest"]
    assert manifest["used"] <= manifest["budget"] == 400
    assert manifest["silent_truncation"] is True and manifest["dropped"]
    assert doc["messages"][0]["role"] == "system"


def test_table_explains_the_build(
    session: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, sid = session
    code, out, _ = run(capsys, db, "context", sid, "--budget", "100000")
    assert code == 0
    assert "model gpt-4o" in out and "verbatim   seqs 2-" in out
    assert "silent truncation: no" in out


def test_compact_writes_a_summary(
    session: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, sid = session
    code, out, _ = run(
        capsys, db, "context", sid, "--budget", "500", "--compact", "--message", "status?"
    )
    assert code == 0 and "compaction: ran" in out
    code, out, _ = run(
        capsys, db, "context", sid, "--budget", "500", "--json", "--message", "status?"
    )
    assert json.loads(out)["manifest"]["summary"]["from_seq"] == 1


def test_unknown_session_and_tiny_budget(
    session: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, sid = session
    code, _, err = run(capsys, db, "context", "nope")
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, db, "context", sid, "--budget", "5", "--message", "hello " * 50)
    assert code == 1 and "budget" in err
