"""Long sessions on the command line: ``state --sync`` batches its appends, long commands
report progress on stderr, ``health --limit`` bounds the output, ``--json`` everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatstate.cli import _commands, _state, main


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--database-url", f"sqlite:///{db}"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def long_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.delenv("CHATSTATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHATSTATE_TENANT", raising=False)
    # Every user message states a new order number: one state change per message, so a
    # single append of the extracted changes would pass the store's 1,000-event limit.
    lines = []
    for i in range(3000):
        if i % 2 == 0:
            text = f"My order number is {10000 + i} and it has not arrived."
            lines.append({"role": "user", "content": text})
        else:
            lines.append({"role": "assistant", "content": "I will check it for you."})
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in lines) + "\n", "utf-8")
    return tmp_path / "long.db", path


def test_long_session_sync_health_and_progress(
    long_session: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, path = long_session
    monkeypatch.setattr(_commands, "_PROGRESS_EVERY", 1000)
    monkeypatch.setattr(_state, "_PROGRESS_EVERY", 1000)
    code, out, err = run(capsys, db, "import", str(path), "--session-id", "long")
    assert code == 0, err
    assert "import: 1,000 of 3,000 events" in err and out.strip() == "long"

    code, out, err = run(capsys, db, "state", "long", "--sync", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["stored"] is True and body["state"]["facts"]
    assert "state: extracted up to #" in err

    code, out, err = run(capsys, db, "health", "long", "--json", "--limit", "20")
    assert code == 0, err
    report = json.loads(out)
    assert report["messages"] == 3000 and len(report["turns"]) == 20
    assert report["turns_omitted"] == 2980 and report["turns"][-1]["seq"] == 3000
    assert "read 1,000 events" in err and "health: analysing" in err
    code, out, _ = run(capsys, db, "health", "long", "--json", "--limit", "0")
    assert len(json.loads(out)["turns"]) == 3000
    assert run(capsys, db, "health", "long", "--limit", "-1")[0] == 2


def test_json_is_honoured_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "k.db"
    code, out, _ = run(capsys, db, "keys", "create", "--tenant", "acme", "--yes", "--json")
    assert code == 0
    key_id = json.loads(out)["key"].split("_")[1]
    code, out, _ = run(capsys, db, "keys", "revoke", key_id, "--json")
    assert code == 0 and json.loads(out) == {"revoked": key_id}
    code, _, err = run(capsys, db, "serve", "--json")
    assert code == 2 and "--json" in err
