"""Benchmarks. ``python -m chatstate.bench store`` measures the storage layer."""
