"""One driver per system for :mod:`chatstate.bench.peers`: what one turn is, in each.

A driver is synchronous (the bench times ``turn`` with a wall clock); the async systems
run each turn to completion on an event loop of their own. The peers are imported only
here and only when chosen; one that is not installed raises :class:`Unavailable` with the
``pip install`` that fixes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from chatstate.context.engine import ContextEngine
from chatstate.context.extractive import ExtractiveSummariser
from chatstate.model import NewEvent
from chatstate.store.protocol import Store
from chatstate.store.sqlite import SQLiteStore

__all__ = ["FACTORIES", "Driver", "Unavailable"]

Costs = list[tuple[int, int]]
"""Tokens of each turn's (user, assistant) message, overheads included."""
Factory = Callable[[], "Driver"]
_T = TypeVar("_T")
_BENCH_EXTRA = "pip install 'chatstate[bench]'"


class Unavailable(Exception):
    """The system cannot run here: not installed, or its server does not answer."""


class Driver(Protocol):
    def turn(self, i: int, user: str, reply: str) -> None: ...
    def disk_bytes(self) -> int: ...
    def tokens_next(self, n: int) -> float: ...
    def close(self) -> None: ...


def _files(path: Path) -> int:
    """Bytes of an SQLite database after folding its WAL in."""
    try:
        db = sqlite3.connect(path, timeout=1)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    except sqlite3.Error:
        pass
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def _full_history(costs: Costs, n: int) -> float:
    """Tokens of the input at turn ``n`` when the whole history is sent."""
    return float(sum(u + a for u, a in costs[: n - 1]) + costs[n - 1][0])


class _Loop:
    """A private event loop, one coroutine run to completion per call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()


class Floor:
    def __init__(self, folder: Path, costs: Costs) -> None:
        from chatstate.context.tokens import counter_for  # noqa: PLC0415

        self.path = folder / "floor.db"
        self.costs = costs
        self.count = counter_for("gpt-4o").count
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, sid INT, seq INT, body TEXT)")
        self.db.execute("CREATE UNIQUE INDEX ev_seq ON ev (sid, seq)")

    def turn(self, i: int, user: str, reply: str) -> None:
        rows = [
            (2 * i + 1, json.dumps({"role": "user", "content": user})),
            (2 * i + 2, json.dumps({"role": "assistant", "content": reply})),
        ]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO ev (sid, seq, body) VALUES (1, ?, ?)", rows)
        self.db.execute("COMMIT")
        self.db.execute(
            "SELECT seq, body FROM ev WHERE sid = 1 ORDER BY seq DESC LIMIT 20"
        ).fetchall()
        self.count(user)
        self.count(reply)

    def disk_bytes(self) -> int:
        return _files(self.path)

    def tokens_next(self, n: int) -> float:
        newest = [c for u, a in self.costs[:n] for c in (u, a)][-20:]
        return float(sum(newest))

    def close(self) -> None:
        self.db.close()


class Chatstate:
    def __init__(
        self, folder: Path, budget: int, overflow: str, *, encrypted: bool = False
    ) -> None:
        self.path = folder / f"chatstate-{overflow}{'-encrypted' if encrypted else ''}.db"
        self.budget = budget
        self.loop = _Loop()
        self.store: Store = self.loop.run(SQLiteStore.open(self.path))
        if encrypted:
            self.store = _encrypted(self.store)
        summariser = (
            ExtractiveSummariser(overflow="drop_oldest") if overflow == "drop_oldest" else None
        )
        self.engine = ContextEngine(self.store, summariser=summariser)
        self.session = self.loop.run(self.store.create_session(tenant_id="bench")).id
        self.used = 0

    async def _turn(self, user: str, reply: str) -> None:
        built = await self.engine.build(self.session, user, tenant_id="bench", budget=self.budget)
        self.used = built.manifest.used
        pair = [NewEvent.message("user", user), NewEvent.message("assistant", reply)]
        await self.engine.append(self.session, pair, tenant_id="bench")

    def turn(self, i: int, user: str, reply: str) -> None:
        self.loop.run(self._turn(user, reply))

    def disk_bytes(self) -> int:
        self.loop.run(self.engine.drain())
        return _files(self.path)

    def tokens_next(self, n: int) -> float:
        return float(self.used)

    def close(self) -> None:
        self.loop.run(self.engine.aclose())
        self.loop.run(self.store.close())
        self.loop.close()


def _encrypted(store: Store) -> Store:
    """``store`` behind :class:`EncryptedStore` with a fresh key (``[encryption]``)."""
    try:
        from chatstate.store.encrypted import EncryptedStore  # noqa: PLC0415 - optional
        from chatstate.store.keys import StaticKeys, generate_key  # noqa: PLC0415
    except ImportError as exc:
        raise Unavailable(
            "cryptography is not installed (pip install 'chatstate[encryption]')"
        ) from exc
    return EncryptedStore(store, StaticKeys.from_text(generate_key("bench")))


class AgentsSession:
    def __init__(self, folder: Path, costs: Costs) -> None:
        try:
            from agents.memory import SQLiteSession  # noqa: PLC0415 - optional peer
        except ImportError as exc:
            raise Unavailable(f"openai-agents is not installed ({_BENCH_EXTRA})") from exc
        self.path = folder / "agents.db"
        self.costs = costs
        self.loop = _Loop()
        self.session = SQLiteSession("bench", str(self.path))

    async def _turn(self, i: int, user: str, reply: str) -> None:
        items = await self.session.get_items()
        if len(items) != 2 * i:
            raise RuntimeError(f"SQLiteSession returned {len(items)} items, not {2 * i}")
        await self.session.add_items(
            [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        )

    def turn(self, i: int, user: str, reply: str) -> None:
        self.loop.run(self._turn(i, user, reply))

    def disk_bytes(self) -> int:
        return _files(self.path)

    def tokens_next(self, n: int) -> float:
        return _full_history(self.costs, n)

    def close(self) -> None:
        self.session.close()
        self.loop.close()


class LangGraph:
    """A one-node chat graph over ``MessagesState``, checkpointed by ``saver``."""

    def __init__(
        self, saver: Any, costs: Costs, size: Callable[[], int], done: Callable[[], None]
    ) -> None:
        from langchain_core.messages import AIMessage, HumanMessage  # noqa: PLC0415
        from langgraph.graph import START, MessagesState, StateGraph  # noqa: PLC0415

        self.human, self.costs, self.size, self.done = HumanMessage, costs, size, done
        self.reply = ""
        self.seen = 0

        def model(state: MessagesState) -> dict[str, list[Any]]:
            self.seen = len(state["messages"])
            return {"messages": [AIMessage(self.reply)]}

        graph = StateGraph(MessagesState)
        graph.add_node("model", model)
        graph.add_edge(START, "model")
        self.app = graph.compile(checkpointer=saver)
        self.config: Any = {"configurable": {"thread_id": "bench"}}

    def turn(self, i: int, user: str, reply: str) -> None:
        self.reply = reply
        self.app.invoke({"messages": [self.human(user)]}, self.config)
        if self.seen != 2 * i + 1:
            raise RuntimeError(f"the model node saw {self.seen} messages, not {2 * i + 1}")

    def disk_bytes(self) -> int:
        return self.size()

    def tokens_next(self, n: int) -> float:
        return _full_history(self.costs, n)

    def close(self) -> None:
        self.done()


def _langgraph_sqlite(folder: Path, costs: Costs) -> Driver:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: PLC0415 - optional peer
    except ImportError as exc:
        raise Unavailable(f"langgraph-checkpoint-sqlite is not installed ({_BENCH_EXTRA})") from exc
    path = folder / "langgraph.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    return LangGraph(SqliteSaver(conn), costs, lambda: _files(path), conn.close)


def _langgraph_chatstate(folder: Path, costs: Costs) -> Driver:
    """The same graph checkpointed by chatstate's own LangGraph adapter on SQLite."""
    try:
        from chatstate.integrations.langgraph import ChatstateSaver  # noqa: PLC0415
    except ImportError as exc:
        raise Unavailable(f"the [langgraph] extra is not installed ({exc})") from exc
    path = folder / "chatstate-langgraph.db"
    saver = ChatstateSaver.from_url(f"sqlite:///{path}")
    return LangGraph(saver, costs, lambda: _files(path), saver.close)


def _langgraph_postgres(url: str, costs: Costs) -> Driver:
    try:
        import psycopg  # noqa: PLC0415 - optional peer
        from langgraph.checkpoint.postgres import PostgresSaver  # noqa: PLC0415
        from psycopg.rows import dict_row  # noqa: PLC0415
    except ImportError as exc:
        raise Unavailable(
            f"langgraph-checkpoint-postgres is not installed ({_BENCH_EXTRA})"
        ) from exc
    schema = f"chatstate_peers_{os.getpid()}"
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            prepare_threshold=0,
            row_factory=dict_row,
            connect_timeout=3,
        )
    except psycopg.Error as exc:
        raise Unavailable(
            f"PostgreSQL does not answer at --postgres-url: {type(exc).__name__}"
        ) from exc
    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f'SET search_path TO "{schema}"')
    saver = PostgresSaver(conn)
    saver.setup()

    def size() -> int:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c "
            "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s "
            "AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
        return int(row["n"]) if row else 0

    def done() -> None:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()

    return LangGraph(saver, costs, size, done)


FACTORIES: dict[str, Callable[[Path, Costs, argparse.Namespace], Factory]] = {
    "floor": lambda folder, costs, _a: lambda: Floor(folder, costs),
    "chatstate": lambda folder, _c, args: lambda: Chatstate(folder, args.budget, "keep"),
    "chatstate-bounded": lambda folder, _c, args: (
        lambda: Chatstate(folder, args.budget, "drop_oldest")
    ),
    "chatstate-encrypted": lambda folder, _c, args: (
        lambda: Chatstate(folder, args.budget, "keep", encrypted=True)
    ),
    "agents-sqlite": lambda folder, costs, _a: lambda: AgentsSession(folder, costs),
    "langgraph-sqlite": lambda folder, costs, _a: lambda: _langgraph_sqlite(folder, costs),
    "langgraph-chatstate": lambda folder, costs, _a: lambda: _langgraph_chatstate(folder, costs),
    "langgraph-postgres": lambda _f, costs, args: (
        lambda: _langgraph_postgres(args.postgres_url, costs)
    ),
}
