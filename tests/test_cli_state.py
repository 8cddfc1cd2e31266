"""``chatstate state``, ``chatstate health`` and ``chatstate eval detectors``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from chatstate.cli import main
from chatstate.store.sqlite import SQLiteStore

EXAMPLE = Path(__file__).parents[1] / "src/chatstate/examples/support_chat.json"


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--database-url", f"sqlite:///{db}"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CHATSTATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHATSTATE_TENANT", raising=False)
    monkeypatch.delenv("CHATSTATE_DETECTOR_CASES", raising=False)
    return tmp_path / "cli.db"


def imported(capsys: pytest.CaptureFixture[str], db: Path, messages: list[object]) -> str:
    path = db.parent / "chat.json"
    path.write_text(json.dumps(messages), "utf-8")
    code, out, err = run(capsys, db, "import", str(path))
    assert code == 0, err
    return out.strip()


def test_state_reads_then_records(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sid = imported(capsys, db, json.loads(EXAMPLE.read_text("utf-8")))
    code, out, _ = run(capsys, db, "state", sid)
    assert code == 0 and "not stored" in out
    assert "order_number           NW-48231" in out and "was NW-48213 until #6" in out
    code, out, _ = run(capsys, db, "state", sid, "--sync", "--json")
    doc = json.loads(out)
    assert doc["stored"] is True and doc["version"] == 1
    assert doc["state"]["facts"]["email"]["value"] == "maria.lopez@example.com"
    assert {c["topic"] for c in doc["state"]["commitments"]} == {"refund", "email"}
    assert not [k for k in doc["state"] if k.startswith("_")]
    code, out, _ = run(capsys, db, "state", sid)
    assert "state version 1" in out


def test_state_of_a_branch(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--branch``: each branch has its own document; a fork's sync folds the shared log."""
    messages = [
        {"role": "user", "content": "My name is Maria Lopez."},
        {"role": "assistant", "content": "Hello Maria."},
        {"role": "user", "content": "My email is maria.lopez@example.com."},
    ]
    sid = imported(capsys, db, messages)
    assert run(capsys, db, "state", sid, "--sync")[0] == 0

    async def fork() -> None:
        store = await SQLiteStore.open(db)
        try:
            await store.fork(tenant_id="default", session_id=sid, new_branch="alt", at_seq=2)
        finally:
            await store.close()

    asyncio.run(fork())
    code, out, _ = run(capsys, db, "state", sid, "--branch", "alt", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["branch"] == "alt" and doc["stored"] is False
    code, out, _ = run(capsys, db, "state", sid, "--branch", "alt", "--sync", "--json")
    doc = json.loads(out)
    assert doc["stored"] is True and doc["version"] == 1
    assert doc["state"]["facts"]["name"]["value"] == "Maria Lopez"
    assert "email" not in doc["state"]["facts"]  # said on main after the fork point
    main_doc = json.loads(run(capsys, db, "state", sid, "--json")[1])
    assert main_doc["branch"] == "main" and "email" in main_doc["state"]["facts"]
    code, out, _ = run(capsys, db, "state", sid, "--branch", "alt")
    assert f"session {sid} branch alt: state version 1" in out
    code, _, err = run(capsys, db, "state", sid, "--branch", "nope")
    assert code == 1 and "not found" in err


def test_health_json_names_detectors_and_evidence(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [
        {"role": "user", "content": "Hi, my account number is 55810-2291. My card was declined."},
        {"role": "assistant", "content": "I've removed the fraud hold, the card works again."},
        {"role": "user", "content": "Thanks. Is anything else blocked?"},
        {"role": "assistant", "content": "Could you tell me your account number first?"},
        {"role": "user", "content": "I gave it already."},
        {"role": "assistant", "content": "Sorry, there is no fraud hold removal on record."},
    ]
    sid = imported(capsys, db, messages)
    code, out, _ = run(capsys, db, "health", sid, "--json")
    assert code == 0
    report = json.loads(out)
    assert [(f["detector"], f["evidence"]) for f in report["flags"]] == [
        ("re_ask", [1, 4]),
        ("contradiction", [2, 6]),
    ]
    assert report["counts"]["re_ask"] == 1 and report["score"] < 1
    assert report["turns"][3]["flags"] == ["re_ask"]
    code, out, _ = run(capsys, db, "health", sid)
    assert code == 0 and "re_ask" in out and "evidence #1, #4" in out


def test_health_of_a_clean_session(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sid = imported(capsys, db, json.loads(EXAMPLE.read_text("utf-8")))
    code, out, _ = run(capsys, db, "health", sid, "--budget", "4000")
    assert code == 0 and "score 1.00 (healthy)" in out


def test_errors(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, db, "health", "nope")
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, db, "state", "nope")
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, db, "eval", "detectors", "--cases", str(db.parent / "x.jsonl"))
    assert code == 2 and "--cases" in err
    bad = db.parent / "bad.jsonl"
    bad.write_text('{"events": 3}\n', "utf-8")
    code, _, err = run(capsys, db, "eval", "detectors", "--cases", str(bad))
    assert code == 2 and "events" in err


def test_eval_detectors(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = db.parent / "cases.jsonl"
    lines = [
        {
            "id": "one",
            "split": "test",
            "events": [
                {"role": "user", "content": "My order number is 7781-3320."},
                {"role": "assistant", "content": "What was your order number again?"},
            ],
            "labels": [{"detector": "re_ask", "seq": 2}],
        },
        {"id": "two", "events": [{"role": "user", "content": "hello"}], "labels": []},
    ]
    cases.write_text("\n".join(json.dumps(c) for c in lines), "utf-8")
    code, out, _ = run(capsys, db, "eval", "detectors", "--cases", str(cases), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["test"]["detectors"]["re_ask"] == {
        "tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0
    }  # fmt: skip
    assert result["all"]["cases"] == 2 and result["dev"]["cases"] == 1
    code, out, err = run(capsys, db, "eval", "detectors", "--cases", str(cases), "--split", "test")
    assert code == 0 and "test (held out)" in out and "dev (tuned on)" not in out
    assert "eval detectors: test: 1 cases" in err  # progress on stderr, not in the result
