"""``chatstate keys`` and ``chatstate serve`` start-up rules, and the settings' sources."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from chatstate.cli.main import main
from chatstate.errors import ValidationError
from chatstate.server import ServerConfig
from chatstate.server.config import is_loopback
from helpers.fake_openai import FakeOpenAI
from test_server_support import server_process


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    code, key, err = run(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--database-url", db
    )
    # The first key ends development mode: refused until confirmed, saying what changes.
    assert code == 2 and key == "" and "ends development mode" in err and "--yes" in err
    assert "no keys" in run("keys", "list", "--database-url", db)[1]
    code, key, err = run(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--database-url", db, "--yes"
    )
    assert code == 0 and key.startswith("cs_") and "not shown again" in err
    code, second, _ = run("keys", "create", "--tenant", "beta", "--database-url", db)
    assert code == 0 and second.startswith("cs_")  # only the first key needs --yes
    assert run("keys", "revoke", second.split("_")[1], "--database-url", db)[0] == 0
    code, listing, _ = run("keys", "list", "--database-url", db)
    key_id = key.split("_")[1]
    assert code == 0 and key_id in listing and "acme" in listing and key.strip() not in listing
    assert run("keys", "revoke", key_id, "--database-url", db)[0] == 0
    assert "no keys" in run("keys", "list", "--database-url", db)[1]
    code, _, err = run(
        "keys", "create", "--tenant", "acme", "--scopes", "root", "--database-url", db, "--yes"
    )
    assert code == 1 and "scopes" in err
    code, _, err = run(
        "keys", "create", "--tenant", "chatstate.keys", "--database-url", db, "--yes"
    )
    assert code == 1 and "reserved" in err


def test_serve_refuses_a_public_interface_without_keys(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "chatstate", "serve", "--host", "0.0.0.0", "--database-url", db],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr


def test_settings_from_file_env_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "chatstate.toml"
    toml.write_text("[server]\nport = 9000\nrate-per-second = 5.5\ncontext_budget = 800\n")
    env = {"CHATSTATE_CONFIG": str(toml), "CHATSTATE_PORT": "9001", "CHATSTATE_DEV_MODE": "no"}
    config = ServerConfig.load({"context_budget": 900}, env=env)
    assert (config.port, config.rate_per_second, config.context_budget) == (9001, 5.5, 900)
    assert config.dev_mode is False
    with pytest.raises(ValidationError):
        ServerConfig.load({"port": "eighty"}, env={})
    toml.write_text("[server]\nport = 9000\nrate-per-secnd = 5.5\n")
    with pytest.raises(ValidationError, match="rate-per-secnd"):
        ServerConfig.load({}, env={"CHATSTATE_CONFIG": str(toml)})
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")  # noqa: S104


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("doc_name", "pattern"),
    [
        ("docs/server.md", r"These work as written.*?```sh\n(.*?)```"),
        ("README.md", r"these work as written.*?```bash\n(.*?)```"),
    ],
)
def test_the_curl_examples_in_the_docs_work_as_written(
    tmp_path: Path, doc_name: str, pattern: str
) -> None:
    doc = (Path(__file__).parents[1] / doc_name).read_text()
    block = re.search(pattern, doc, re.S)
    assert block is not None
    with (
        FakeOpenAI() as fake,
        server_process(
            f"sqlite:///{tmp_path / 'doc.db'}", fake.base_url, tmp_path / "server.log"
        ) as server,
    ):
        script = "set -euo pipefail\n" + block.group(1).replace(
            "localhost:8080", f"127.0.0.1:{server.port}"
        ).replace("curl -s", "curl -sf")
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stderr
    assert "My order 1234 never arrived." in done.stdout
    assert '"manifest"' in done.stdout
