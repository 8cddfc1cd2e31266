"""The storage contract, run against every registered backend."""

from pathlib import Path

from chatstate.testing.backends import BackendSpec
from chatstate.testing.conformance import *  # noqa: F403 - the suite is the module's tests
from chatstate.testing.state_machine import run_state_machine


def test_matches_the_model(backend: BackendSpec, tmp_path: Path) -> None:
    run_state_machine(backend, tmp_path)
