"""Token counting: exact and offline for OpenAI families, an over-estimate elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from chatstate.context.tokens import (
    BPECounter,
    EstimateCounter,
    ModelInfo,
    counter_for,
    model_info,
    register_model,
)
from chatstate.errors import ValidationError


def test_known_models_get_exact_counters() -> None:
    assert isinstance(counter_for("gpt-4o-mini"), BPECounter)
    assert counter_for("gpt-4o-mini").name == "o200k_base"
    assert counter_for("gpt-4-0613").name == "cl100k_base"
    assert counter_for("gpt-4o").count("hello world") == 2
    assert counter_for("gpt-4o").count("") == 0


def test_longest_prefix_wins_and_unknown_models_estimate() -> None:
    assert model_info("gpt-4o-2024-08-06").window == 128_000
    assert model_info("gpt-4-turbo-preview").window == 128_000
    assert model_info("gpt-4").window == 8_192
    assert isinstance(counter_for("some-local-model"), EstimateCounter)
    assert model_info("some-local-model").window == 8_192


def test_models_can_be_registered() -> None:
    register_model("acme-llm", ModelInfo(window=32_000, encoding="cl100k_base"))
    assert model_info("acme-llm-7b").window == 32_000
    assert counter_for("acme-llm-7b").name == "cl100k_base"
    with pytest.raises(ValidationError):
        register_model("", ModelInfo(window=1, encoding=None))


def test_counts_work_with_the_network_unreachable() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    code = (
        "from chatstate.context.tokens import counter_for;"
        "print(type(counter_for('gpt-4o')).__name__, counter_for('gpt-4o').count('hello world'))"
    )
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["BPECounter", "2"]
