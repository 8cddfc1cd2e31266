"""Every Python block in README.md and docs/*.md runs as written.

Each block runs as its own script in an empty folder (twice, so an example that only
works on a fresh database is caught). An HTML comment on the line before a block changes
how it runs, and only where a script cannot stand alone:

* ``<!-- docs-test: server -->``: against ``chatstate serve`` in development mode (with a
  fake upstream model) on a free port, which replaces ``127.0.0.1:8080`` in the block;
* ``<!-- docs-test: pytest -->``: the block is files (``# name.py`` lines start each one),
  run with pytest and the ``ini`` block that follows it as ``pytest.ini``;
* ``<!-- docs-test: needs MODULE -->``: skipped when an optional extra is not installed;
* ``<!-- docs-test: skip REASON -->``: not run (a service that tests cannot reach).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.fake_openai import FakeOpenAI
from test_server_support import server_process

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- docs-test: (?P<mode>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
_INI = re.compile(r"```ini\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    code: str
    mode: str
    ini: str

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text("utf-8")
        for match in _BLOCK.finditer(text):
            ini = _INI.search(text, match.end())
            line = text.count("\n", 0, match.start("code"))
            found.append(
                Block(doc, line, match["code"], match["mode"] or "", ini[1] if ini else "")
            )
    return found


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSTATE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def _script(block: Block, cwd: Path, code: str) -> None:
    script = cwd / "block.py"
    script.write_text(code, "utf-8")
    for attempt in (1, 2):
        done = _run([sys.executable, str(script)], cwd)
        assert done.returncode == 0, f"{block.name} (run {attempt}):\n{done.stderr[-3000:]}"


def _pytest_files(block: Block, cwd: Path) -> None:
    parts = re.split(r"^# (\S+\.py)\n", block.code, flags=re.M)
    assert len(parts) >= 3, f"{block.name}: a pytest block starts each file with '# name.py'"
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        (cwd / name).write_text(body, "utf-8")
    (cwd / "pytest.ini").write_text(block.ini, "utf-8")
    os.environ.setdefault("CHATSTATE_BACKENDS", "memory,sqlite")
    done = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-k",
            "create_and_get_session or append_and_read",
        ],
        cwd,
    )
    assert done.returncode == 0, f"{block.name}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    assert " passed" in done.stdout


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.name)
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    mode, _, arg = block.mode.partition(" ")
    if mode == "skip":
        assert arg.strip(), f"{block.name}: a skipped block gives its reason"
        pytest.skip(arg)
    if mode == "needs" and importlib.util.find_spec(arg.strip()) is None:
        pytest.skip(f"needs {arg.strip()} (an optional extra)")
    if mode == "pytest":
        _pytest_files(block, tmp_path)
    elif mode == "server":
        with (
            FakeOpenAI(reply="Your order ships today.") as fake,
            server_process(
                f"sqlite:///{tmp_path / 'server.db'}", fake.base_url, tmp_path / "server.log"
            ) as server,
        ):
            code = block.code.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
            _script(block, tmp_path, code)
    else:
        assert mode in ("", "needs"), f"{block.name}: unknown docs-test mode {mode!r}"
        _script(block, tmp_path, block.code)


def test_the_blocks_are_found() -> None:
    found = blocks()
    assert any(b.doc.name == "README.md" for b in found)
    assert sum(b.mode.startswith("skip") for b in found) <= 3, "skips are kept rare"
