"""SQLite backend (embedded default). See :mod:`.store`."""
