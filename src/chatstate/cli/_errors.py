"""Errors of the command line itself. Each carries its exit code, as click's do.

Exit codes: 0 success, 1 an operation failed (any :class:`chatstate.errors.ChatstateError`,
or :class:`CliError`), 2 the command was used wrongly or its input file is not valid
(:class:`UsageError`, argparse's own errors), 130 interrupted.
"""

from __future__ import annotations

__all__ = ["CliError", "UsageError"]


class CliError(Exception):
    """A command failed for a reason that is not a store error (a file it cannot write)."""

    exit_code = 1


class UsageError(CliError):
    """The command line or its input is wrong; running it again unchanged will not help."""

    exit_code = 2
