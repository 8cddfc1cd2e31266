"""Test kit for chatstate and for anyone writing a backend: the conformance suite, the
backend registry, a movable clock, and a state machine that checks a backend against the
in-memory model. Needs the ``[dev]`` extra (pytest, hypothesis)."""

from chatstate.testing.backends import REGISTRY, BackendSpec, FakeClock, in_ci, register

__all__ = ["REGISTRY", "BackendSpec", "FakeClock", "in_ci", "register"]
