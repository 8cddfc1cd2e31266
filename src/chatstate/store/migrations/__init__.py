"""Numbered schema migrations, one folder per SQL dialect, and the rule for applying them.

Files are named ``NNNN_description.sql`` and applied in number order, each in the same
transaction as its row in ``schema_migrations``. The number is in the file name, never
derived from a list position. Backends decide what to do with :func:`plan`'s answer:

* an empty database is created at the newest version;
* a database behind the code is refused with :class:`SchemaMismatch` naming
  ``chatstate migrate``, unless the caller asked to migrate;
* a database ahead of the code is always refused (upgrade chatstate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from chatstate.errors import SchemaMismatch

__all__ = ["Migration", "load_migrations", "plan"]

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (a folder beside this file), in order."""
    folder = resources.files(__package__).joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


def plan(
    current: int, migrations: list[Migration], *, empty: bool, migrate: bool, fix: str
) -> list[Migration]:
    """Which migrations to apply now, or raise :class:`SchemaMismatch`."""
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise SchemaMismatch(
            f"the database schema is version {current}, newer than this chatstate ({latest})",
            fix="upgrade chatstate to a release that knows this schema",
        )
    pending = [m for m in migrations if m.version > current]
    if pending and not empty and not migrate:
        raise SchemaMismatch(
            f"the database schema is version {current}, this chatstate needs {latest}", fix=fix
        )
    return pending


Dialect = Literal["sqlite", "postgres"]
