"""The public surface is deliberate: this test changes only when the API does."""

from __future__ import annotations

import asyncio
import inspect

import chatstate
from chatstate import errors
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.store.sqlite import SQLiteStore

EXPECTED = {
    "AlreadyExists",
    "AppendResult",
    "BackendUnavailable",
    "Branch",
    "BranchNotFound",
    "Capabilities",
    "ChatstateError",
    "Conflict",
    "Event",
    "IdempotencyInProgress",
    "IdempotencyMismatch",
    "InvalidInput",
    "MemoryStore",
    "NewEvent",
    "NotFound",
    "Page",
    "SQLiteStore",
    "SchemaMismatch",
    "SeqConflict",
    "Session",
    "SessionExpired",
    "SessionNotFound",
    "StateDoc",
    "StateVersionConflict",
    "Store",
    "StoreConfig",
    "StoreLimits",
    "TooLarge",
    "ToolCall",
    "ValidationError",
    "from_openai",
    "open_store",
    "to_openai",
}


def test_all_is_pinned() -> None:
    assert set(chatstate.__all__) == EXPECTED
    for name in chatstate.__all__:
        assert hasattr(chatstate, name)


def test_error_tree_and_statuses() -> None:
    statuses = {
        errors.NotFound: 404,
        errors.SessionNotFound: 404,
        errors.SessionExpired: 410,
        errors.BranchNotFound: 404,
        errors.Conflict: 409,
        errors.SeqConflict: 409,
        errors.StateVersionConflict: 409,
        errors.AlreadyExists: 409,
        errors.IdempotencyInProgress: 409,
        errors.InvalidInput: 422,
        errors.ValidationError: 422,
        errors.IdempotencyMismatch: 422,
        errors.TooLarge: 413,
        errors.BackendUnavailable: 503,
        errors.SchemaMismatch: 500,
    }
    for cls, status in statuses.items():
        assert issubclass(cls, errors.ChatstateError)
        assert cls.status == status, cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"
    assert set(errors.__all__) == {c.__name__ for c in statuses} | {"ChatstateError"}


def test_protocol_methods_are_keyword_only_and_async() -> None:
    for name, member in inspect.getmembers(Store, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert inspect.iscoroutinefunction(member), name
        params = list(inspect.signature(member).parameters.values())[1:]
        assert all(p.kind is p.KEYWORD_ONLY for p in params), name


def test_backends_satisfy_the_protocol(tmp_path: object) -> None:
    async def check() -> None:
        sqlite = await SQLiteStore.open(":memory:")
        try:
            for store in (MemoryStore(), sqlite):
                assert isinstance(store, Store)
                for name, member in inspect.getmembers(Store, inspect.isfunction):
                    if name.startswith("_"):
                        continue
                    mine = inspect.signature(getattr(store, name))
                    theirs = inspect.signature(member)
                    assert list(mine.parameters) == list(theirs.parameters)[1:], name
        finally:
            await sqlite.close()

    asyncio.run(check())
