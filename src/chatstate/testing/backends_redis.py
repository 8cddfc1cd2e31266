"""Conformance registration of the redis backend(s)."""
