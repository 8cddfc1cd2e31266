"""The ``chatstate`` command line, driven in-process through ``main(argv)`` on real SQLite
files, plus one run of the installed entry point in a child process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatstate.cli import main
from chatstate.cli._transcript import chunk
from chatstate.model import NewEvent
from chatstate.store.backends.sqlite import core as sqlite_backend
from chatstate.store.migrations import Migration
from chatstate.store.rules import StoreLimits
from chatstate.store.sqlite import SQLiteStore

TRANSCRIPT: list[dict[str, object]] = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": "Bonjour 👋🏽, שלום, e\u0301 and a\u0308: look up order A-1?",
        "name": "zoë",
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"id": "A-1", "ü": [1, 2]}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": "{}"},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    {"role": "tool", "tool_call_id": "call_2", "content": "sunny", "name": "weather"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And this photo?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "low"},
            },
        ],
    },
    {"role": "assistant", "content": "Shipped; nice photo.", "refusal": None, "audio": {"id": "x"}},
]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def cli(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``cli(*argv)`` runs ``chatstate argv --database-url <tmp file>`` in-process."""
    monkeypatch.delenv("CHATSTATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHATSTATE_TENANT", raising=False)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main([*argv, "--database-url", f"sqlite:///{db}"])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write_json(path: Path, value: object) -> str:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return str(path)


def import_ok(cli: Run, file: str, *extra: str) -> str:
    result = cli("import", file, *extra)
    assert result.code == 0, result.err
    return result.out.strip()


def events_of(cli: Run, session_id: str, *extra: str) -> list[dict[str, object]]:
    """The session's events as ``show --json`` gives them, without time and place."""
    result = cli("sessions", "show", session_id, "--json", *extra)
    assert result.code == 0, result.err
    events = json.loads(result.out)["events"]
    return [{k: v for k, v in e.items() if k not in ("created_at", "branch")} for e in events]


def test_demo_runs_as_an_installed_command_twice(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("chatstate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatstate"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSTATE_")}
    env["PYTHONIOENCODING"] = "utf-8"
    ids = []
    for _ in range(2):
        proc = subprocess.run(
            [*command, "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert "lookup_order(" in proc.stdout
        assert "← result of call_lookup_2 (lookup_order)" in proc.stdout
        assert "[image: https://example.com/" in proc.stdout
        assert "🙏" in proc.stdout
        ids.append(proc.stdout.split("session ", 1)[1].split()[0])
    assert ids[0] != ids[1]
    assert (tmp_path / "chatstate.db").exists()  # the documented default database
    listing = subprocess.run(
        [sys.executable, "-m", "chatstate", "sessions", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {s["id"] for s in json.loads(listing.stdout)["sessions"]} == set(ids)


def test_export_then_import_gives_the_identical_transcript(cli: Run, tmp_path: Path) -> None:
    first = import_ok(cli, write_json(tmp_path / "t.json", TRANSCRIPT), "--user-id", "u1")
    exported = tmp_path / "export.jsonl"
    result = cli("sessions", "export", first, "-o", str(exported))
    assert result.code == 0
    assert result.out == f"wrote {len(TRANSCRIPT)} messages to {exported}\n"
    lines = exported.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == TRANSCRIPT

    second = import_ok(cli, str(exported))
    assert events_of(cli, second) == events_of(cli, first)
    again = cli("sessions", "export", second)
    assert again.code == 0
    assert again.out == exported.read_text(encoding="utf-8")


def test_export_keeps_an_unreadable_row_marked_and_import_skips_it(
    cli: Run, db: Path, tmp_path: Path
) -> None:
    """RELIABILITY case 22 on the command line: a row rewritten behind the store's back
    is exported as stored under a marker, never dropped; the export still imports."""
    transcript = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "BROKEN-ROW"},
        {"role": "user", "content": "third"},
    ]
    first = import_ok(cli, write_json(tmp_path / "t.json", transcript))
    body = '{"v":99,"kind":"message","role":"assistant","content":"BROKEN-ROW"}'
    with sqlite3.connect(db) as conn:
        assert (
            conn.execute(
                "UPDATE events SET body = ? WHERE body LIKE '%BROKEN-ROW%'", (body,)
            ).rowcount
            == 1
        )
    exported = tmp_path / "export.jsonl"
    result = cli("sessions", "export", first, "-o", str(exported))
    assert result.code == 0, result.err
    assert "1 events that cannot be read" in result.err
    lines = [json.loads(x) for x in exported.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == transcript[0] and lines[2] == transcript[2]
    marked = lines[1]["chatstate_unreadable"]
    assert (marked["seq"], marked["reason"], marked["raw"]) == (2, "unreadable", body)

    again = cli("import", str(exported))
    assert again.code == 0, again.err
    assert "skipped 1 lines marked 'chatstate_unreadable'" in again.err
    contents = [e["content"] for e in events_of(cli, again.out.strip())]
    assert contents == ["first", "third"]


def test_import_reads_jsonl_from_stdin(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(json.dumps(m) for m in TRANSCRIPT) + "\n\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    result = cli("import", "-", "--json", "--session-id", "chat-1")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"id": "chat-1", "events": 7, "tenant": "default"}


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"role": "user", "content": "a"}\n\n{"role": "user", "content": }\n', "line 3"),
        ('[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]', "message [1]"),
        ('[{"role": "user", "content": "a\\u0000"}]', "message [0]: content: U+0000"),
        ('[{"role": "tool", "content": "x"}]', "needs tool_call_id"),
        ('{"messages": [{"role": "user", "content": "a"}]}\n', "whole conversation"),
        ('{"role": "user", "content": "a"}\n[1]\n', "line 2: a message must be a JSON object"),
        ('{"role": "user", "content": "a"', "line 1: invalid JSON"),
        ('{"role": "user", "content": 5}\n', "content must be text"),
        ("  \n", "the file is empty"),
        ("[]", "no messages"),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2(
    cli: Run, db: Path, tmp_path: Path, content: str, where: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    result = cli("import", str(bad))
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"error: {bad}")
    assert where in result.err
    assert result.err.count("\n") == 1
    assert not db.exists()  # validated before the database was touched


def test_missing_and_non_utf8_files(cli: Run, tmp_path: Path) -> None:
    missing = cli("import", str(tmp_path / "nope.json"))
    assert (missing.code, missing.err.count("\n")) == (2, 1)
    assert "cannot read" in missing.err
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"role": "user", "content": "caf\xe9"}\n')
    assert "not UTF-8" in cli("import", str(latin)).err


def test_tenants_do_not_see_each_other(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_json(tmp_path / "t.json", TRANSCRIPT)
    acme = import_ok(cli, file, "--tenant", "acme")
    listed = json.loads(cli("sessions", "list", "--json").out)
    assert listed == {"sessions": [], "next_cursor": None}
    hidden = cli("sessions", "show", acme)
    assert hidden.code == 1
    assert hidden.err == f"error: session {acme!r} not found (tenant 'default')\n"
    assert cli("sessions", "delete", acme).code == 1
    monkeypatch.setenv("CHATSTATE_TENANT", "acme")
    assert [s["id"] for s in json.loads(cli("sessions", "list", "--json").out)["sessions"]] == [
        acme
    ]
    assert cli("sessions", "show", acme).code == 0


@pytest.mark.parametrize("action", ["show", "export", "delete"])
def test_an_unknown_session_is_exit_1_with_its_id(cli: Run, action: str) -> None:
    result = cli("sessions", action, "no-such-session")
    assert result.code == 1
    assert result.err == "error: session 'no-such-session' not found (tenant 'default')\n"


def test_delete_one_session_and_all_of_a_user(cli: Run, tmp_path: Path) -> None:
    file = write_json(tmp_path / "t.json", TRANSCRIPT)
    ann = [import_ok(cli, file, "--user-id", "ann") for _ in range(2)]
    bob = import_ok(cli, file, "--user-id", "bob")
    assert cli("sessions", "delete", ann[0]).out == f"deleted session {ann[0]}\n"
    assert cli("sessions", "show", ann[0]).code == 1
    refused = cli("sessions", "delete", "--user-id", "ann")
    assert refused.code == 2
    assert "--yes" in refused.err
    assert cli("sessions", "show", ann[1]).code == 0
    assert cli("sessions", "delete", ann[1], "--user-id", "ann").code == 2
    done = cli("sessions", "delete", "--user-id", "ann", "--yes", "--json")
    assert json.loads(done.out) == {"deleted": 1}
    remaining = json.loads(cli("sessions", "list", "--json").out)["sessions"]
    assert [s["id"] for s in remaining] == [bob]


def test_list_pages_newest_first_with_a_cursor(cli: Run, tmp_path: Path) -> None:
    file = write_json(tmp_path / "t.json", TRANSCRIPT)
    ids = [import_ok(cli, file, "--user-id", f"user{i}") for i in range(3)]
    table = cli("sessions", "list", "--limit", "2")
    lines = table.out.splitlines()
    header = "ID CREATED (UTC) UPDATED (UTC) EVENTS USER METADATA"
    assert lines[0].split() == header.split()
    assert [line.split()[0] for line in lines[1:3]] == [ids[2], ids[1]]
    assert lines[1].split()[5:8] == ["7", "user2", '{"imported_from":']
    cursor = lines[-1].removeprefix("next page: --cursor ")
    rest = json.loads(cli("sessions", "list", "--limit", "2", "--cursor", cursor, "--json").out)
    assert [s["id"] for s in rest["sessions"]] == [ids[0]]
    assert rest["next_cursor"] is None
    assert rest["sessions"][0]["events"] == 7
    only = json.loads(cli("sessions", "list", "--user-id", "user1", "--json").out)
    assert [s["id"] for s in only["sessions"]] == [ids[1]]


async def _add_non_chat_events(db: Path, session_id: str) -> None:
    store = await SQLiteStore.open(db)
    try:
        await store.append(
            tenant_id="default",
            session_id=session_id,
            events=[
                NewEvent(kind="state", data={"order": "A-1"}),
                NewEvent(kind="summary", data={"text": "User asked about order A-1."}),
                NewEvent(kind="marker", data={"label": "handoff"}),
                NewEvent.message("assistant", "word " * 2000),
            ],
        )
    finally:
        await store.close()


def test_show_renders_every_kind(cli: Run, db: Path, tmp_path: Path) -> None:
    sid = import_ok(cli, write_json(tmp_path / "t.json", TRANSCRIPT))
    asyncio.run(_add_non_chat_events(db, sid))
    out = cli("sessions", "show", sid).out
    assert out.startswith(f"session {sid}  tenant default  user -\nbranch main, 11 events")
    assert "#2  user (zoë)\n    Bonjour 👋🏽, שלום" in out
    assert '→ lookup_order({"id": "A-1", "ü": [1, 2]})  [call_1]' in out
    assert "#4  tool  ← result of call_1 (lookup_order)" in out
    assert "[image: https://example.com/a.png]" in out
    assert 'extra: {"refusal": null, "audio": {"id": "x"}}' in out
    assert '#8  ── state ──\n    {"order": "A-1"}' in out
    assert "#9  ── summary ──\n    User asked about order A-1." in out
    assert "#10  ── marker ──" in out
    assert "more lines (--full shows all)" in out
    assert all(len(line) <= 120 for line in out.splitlines())
    full = cli("sessions", "show", sid, "--full").out
    assert full.count("word") == 2000
    last = cli("sessions", "show", sid, "--last", "2").out
    assert "#10  ── marker ──" in last
    assert "#9" not in last
    exported = cli("sessions", "export", sid)
    assert len(exported.out.splitlines()) == 8
    assert exported.err == "skipped 3 state/summary/marker events (no chat message form)\n"


def test_unknown_branch_is_exit_1(cli: Run, tmp_path: Path) -> None:
    sid = import_ok(cli, write_json(tmp_path / "t.json", TRANSCRIPT))
    result = cli("sessions", "show", sid, "--branch", "nope")
    assert result.code == 1
    assert "branch 'nope' not found" in result.err


def test_a_long_import_is_chunked_and_exported_by_pages(cli: Run, tmp_path: Path) -> None:
    lines = [json.dumps({"role": "user", "content": f"message {i}"}) for i in range(2500)]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = cli("import", str(path), "--json")
    assert json.loads(result.out)["events"] == 2500
    exported = cli("sessions", "export", json.loads(result.out)["id"])
    assert exported.out.splitlines() == [
        json.dumps(json.loads(line), ensure_ascii=False) for line in lines
    ]


def test_chunks_respect_count_and_size_limits() -> None:
    sized = [(NewEvent.message("user", str(i)), 10) for i in range(7)]
    limits = StoreLimits(max_events_per_append=3, max_append_bytes=25)
    assert [len(c) for c in chunk(sized, limits)] == [2, 2, 2, 1]
    assert [len(c) for c in chunk(sized, StoreLimits(max_events_per_append=3))] == [3, 3, 1]


def test_migrate_reports_the_schema_version(cli: Run) -> None:
    text = cli("migrate")
    assert text.code == 0
    latest = sqlite_backend.load_migrations("sqlite")[-1].version
    assert text.out.endswith(f": schema version {latest}, up to date\n")
    report = json.loads(cli("migrate", "--json").out)
    assert report == {
        "database": report["database"],
        "before": latest,
        "after": latest,
        "changed": False,
    }
    assert cli("migrate", "--schema", "x").code == 2  # PostgreSQL only


def test_an_old_schema_is_refused_until_migrate(
    cli: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("demo").code == 0
    shipped = sqlite_backend.load_migrations("sqlite")
    newer = Migration(len(shipped) + 1, "cli_test", "CREATE TABLE cli_test (x INTEGER)")
    monkeypatch.setattr(sqlite_backend, "load_migrations", lambda _dialect: [*shipped, newer])
    refused = cli("sessions", "list")
    assert refused.code == 1
    assert refused.err.count("\n") == 1
    assert f"fix: chatstate migrate --database-url sqlite:///{db}" in refused.err
    done = cli("migrate")
    assert done.out.endswith(f"schema version {len(shipped)} -> {newer.version}\n")
    assert cli("sessions", "list").code == 0


def test_a_newer_schema_is_refused_by_migrate_too(cli: Run, db: Path) -> None:
    assert cli("migrate").code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    conn.close()
    result = cli("migrate")
    assert result.code == 1
    assert "newer than this chatstate" in result.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["sessions", "show"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("chatstate ")


def test_options_go_before_or_after_the_command(cli: Run, db: Path) -> None:
    assert cli("demo").code == 0
    listed = main(["--json", "--database-url", f"sqlite:///{db}", "sessions", "list"])
    assert listed == 0


def test_passwords_never_reach_the_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTATE_DATABASE_URL", "mysql://admin:hunter2@db.example/chat")
    assert main(["sessions", "list"]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "admin:***@db.example" in err


@pytest.mark.postgres
def test_migrate_import_and_export_on_postgres(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("psycopg")
    from chatstate.testing.backends import REGISTRY, in_ci
    from chatstate.testing.backends_postgres import create_schema, drop_schema, server_url

    reason = REGISTRY["postgres"].unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(reason)
    schema = asyncio.run(create_schema())
    try:
        assert main(["migrate", "--database-url", server_url(), "--schema", schema]) == 0
        assert f"(schema {schema}): schema version 0 -> " in capsys.readouterr().out
        sep = "&" if "?" in server_url() else "?"
        url = f"{server_url()}{sep}options=-c%20search_path%3D{schema}"
        file = write_json(tmp_path / "t.json", TRANSCRIPT)
        assert main(["import", file, "--database-url", url]) == 0
        sid = capsys.readouterr().out.strip()
        assert main(["sessions", "export", sid, "--database-url", url]) == 0
        exported = capsys.readouterr().out.splitlines()
        assert [json.loads(line) for line in exported] == TRANSCRIPT
    finally:
        asyncio.run(drop_schema(schema))
