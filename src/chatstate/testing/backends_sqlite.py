"""Conformance registration of the sqlite backend(s)."""
