"""chatstate: durable conversation state for multi-turn LLM chat.

Every session is an append-only event log with dense sequence numbers, branches that
share their parent's prefix, and a versioned state document, behind one async
:class:`Store` protocol with interchangeable backends::

    store = await open_store("sqlite:///./chatstate.db")
    await store.create_session(tenant_id="acme", session_id="s1")
    await store.append(tenant_id="acme", session_id="s1", events=[NewEvent.message("user", "hi")])
    recent = await store.read_last(tenant_id="acme", session_id="s1", n=20)
"""

from chatstate.errors import (
    AlreadyExists,
    BackendUnavailable,
    BranchNotFound,
    ChatstateError,
    Conflict,
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    SchemaMismatch,
    SeqConflict,
    SessionExpired,
    SessionNotFound,
    StateVersionConflict,
    TooLarge,
    ValidationError,
)
from chatstate.model import (
    AppendResult,
    Branch,
    Capabilities,
    Event,
    NewEvent,
    Page,
    Session,
    StateDoc,
    ToolCall,
)
from chatstate.openai_format import from_openai, to_openai
from chatstate.store.memory import MemoryStore
from chatstate.store.protocol import Store
from chatstate.store.rules import StoreConfig, StoreLimits
from chatstate.store.sqlite import SQLiteStore
from chatstate.store.url import open_store

__all__ = [
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
]
