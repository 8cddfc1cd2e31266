"""The ``chatstate`` command: argument parsing, defaults from the environment, exit codes.

``main(argv)`` returns the exit code instead of exiting, so tests and other programs can
drive it in-process. Errors are one line on stderr, never a traceback: 1 for a failed
operation (any :class:`~chatstate.errors.ChatstateError`), 2 for a usage error or an
invalid input file, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib import metadata
from urllib.parse import urlsplit

from chatstate.cli import _build, _commands, _eval, _migrate, _serve, _sessions, _state
from chatstate.cli._commands import Context
from chatstate.cli._errors import CliError
from chatstate.errors import ChatstateError, SessionNotFound
from chatstate.store.url import DEFAULT_DATABASE_URL, redact

__all__ = ["DEFAULT_TENANT", "build_parser", "main"]

DEFAULT_TENANT = "default"
Handler = Callable[[Context, argparse.Namespace], Coroutine[object, object, int]]


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name.

    Their defaults are SUPPRESS so that a subcommand's parser does not overwrite a value
    given before the subcommand; :func:`_context` fills in the real defaults.
    """
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"where sessions live (default: $CHATSTATE_DATABASE_URL, else {DEFAULT_DATABASE_URL})",
    )
    group.add_argument(
        "--redis-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="Redis hot tier in front of the database (default: $CHATSTATE_REDIS_URL, else none)",
    )
    group.add_argument(
        "--tenant",
        default=argparse.SUPPRESS,
        help=f"tenant id (default: $CHATSTATE_TENANT, else {DEFAULT_TENANT!r})",
    )
    group.add_argument(
        "--json",
        dest="as_json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output",
    )
    return common


def _command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=[_common()])
    parser.set_defaults(handler=handler)
    return parser


def _add_sessions(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = subparsers.add_parser(
        "sessions", help="list, show, export or delete sessions", parents=[_common()]
    )
    sub = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _command(sub, "list", _sessions.list_sessions, "sessions, newest first")
    listing.add_argument("--user-id", help="only this user's sessions")
    listing.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    listing.add_argument("--cursor", help="the next-page cursor a previous listing printed")

    show = _command(sub, "show", _sessions.show, "a readable transcript of a session")
    show.add_argument("id", help="session id")
    show.add_argument("--branch", help="branch to show (default: the session's default)")
    show.add_argument("--last", type=int, metavar="N", help="only the newest N events")
    show.add_argument("--full", action="store_true", help="do not shorten long contents")

    export = _command(
        sub, "export", _sessions.export, "a session as JSONL, one OpenAI message per line"
    )
    export.add_argument("id", help="session id")
    export.add_argument("--branch", help="branch to export (default: the session's default)")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")

    delete = _command(sub, "delete", _sessions.delete, "hard-delete a session or a user's")
    delete.add_argument("id", nargs="?", help="session id")
    delete.add_argument("--user-id", help="delete every session of this user instead")
    delete.add_argument("--yes", action="store_true", help="confirm a --user-id delete")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstate",
        description="Durable conversation state for LLM chat: sessions as event logs.",
        parents=[_common()],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(sub, "demo", _commands.demo, "import the example support chat and show it")
    demo.add_argument("--full", action="store_true", help="do not shorten long contents")

    imp = _command(
        sub,
        "import",
        _commands.import_file,
        "a new session from a transcript: a JSON array of OpenAI messages, or JSONL",
    )
    imp.add_argument("file", metavar="FILE", help="transcript file, or - for stdin")
    imp.add_argument("--session-id", help="id for the new session (default: generated)")
    imp.add_argument("--user-id", help="user the session belongs to")

    _add_sessions(sub)
    ctx_cmd = _command(
        sub, "context", _build.context, "the context the next model call would get, and why"
    )
    ctx_cmd.add_argument("id", help="session id")
    ctx_cmd.add_argument("--message", help="the new user message (default: the log's newest)")
    ctx_cmd.add_argument("--model", default="gpt-4o", help="model name (default gpt-4o)")
    ctx_cmd.add_argument("--budget", type=int, help="input tokens (default: window - reply)")
    ctx_cmd.add_argument("--branch", default="main", help="branch (default main)")
    ctx_cmd.add_argument(
        "--compact", action="store_true", help="also fold overflowing turns into a summary now"
    )
    migrate = _command(sub, "migrate", _migrate.migrate, "bring the database to the newest schema")
    migrate.add_argument(
        "--schema", help="PostgreSQL only: the schema that holds chatstate's tables"
    )
    _serve.register(sub, _command)  # serve, keys
    evals = sub.add_parser("eval", help="measure chatstate on conversation data sets")
    eval_sub = evals.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION")
    _eval.add_eval_context(eval_sub, _command)  # eval context
    _state.add_parsers(sub, eval_sub, _command)  # state, health, eval detectors
    _eval.add_bench(sub, _command)  # bench
    return parser


def _version() -> str:
    try:
        return metadata.version("chatstate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _context(args: argparse.Namespace) -> Context:
    url = getattr(args, "database_url", None) or os.environ.get(
        "CHATSTATE_DATABASE_URL", DEFAULT_DATABASE_URL
    )
    tenant = getattr(args, "tenant", None) or os.environ.get("CHATSTATE_TENANT", DEFAULT_TENANT)
    return Context(
        database_url=url,
        tenant=tenant,
        as_json=bool(getattr(args, "as_json", False)),
        out=sys.stdout,
        err=sys.stderr,
        width=min(shutil.get_terminal_size((100, 24)).columns, 120),
        cache_url=getattr(args, "redis_url", None) or os.environ.get("CHATSTATE_REDIS_URL"),
    )


def _scrub(message: str, url: str) -> str:
    """``message`` with the database URL's password, if any, replaced by ``***``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return message
    if not password:
        return message
    return message.replace(url, redact(url)).replace(f":{password}@", ":***@")


def _fail(ctx: Context, message: str, code: int) -> int:
    ctx.err.write(f"error: {_scrub(message, ctx.database_url)}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chatstate`` command line; return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    ctx = _context(args)
    # Backends warn through logging (a Redis without persistence, PostgreSQL retries);
    # give those warnings a prefix. A program that configured logging keeps its own.
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(ctx, args))
    except SessionNotFound as exc:
        return _fail(ctx, f"{exc.message} (tenant {ctx.tenant!r})", 1)
    except ChatstateError as exc:
        return _fail(ctx, exc.message, 1)
    except CliError as exc:
        return _fail(ctx, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail(ctx, "interrupted", 130)
    except BrokenPipeError:
        # The reader went away (``chatstate sessions export ID | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
