"""The ``chatstate`` command line: import, show, export and delete sessions, migrate.

Run ``chatstate --help``; ``main(argv)`` runs it in-process and returns the exit code.
"""

from chatstate.cli.main import main

__all__ = ["main"]
