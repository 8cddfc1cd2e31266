"""Conformance registration of the postgres backend(s)."""
