"""Typed errors of chatstate. Every error carries the HTTP status it maps to.

The tree::

    ChatstateError (500)                 root; catch this to catch everything we raise
    ├── NotFound (404)
    │   ├── SessionNotFound (404)
    │   │   └── SessionExpired (410)     the session existed but its TTL has passed
    │   └── BranchNotFound (404)
    ├── Conflict (409)
    │   ├── SeqConflict (409)            append with a stale ``expected_seq``; nothing written
    │   ├── StateVersionConflict (409)   ``put_state`` with a stale ``expected_version``
    │   ├── AlreadyExists (409)          a session or branch id that is taken
    │   └── IdempotencyInProgress (409)  the original request with this key is still running
    ├── InvalidInput (422)
    │   ├── ValidationError (422)        bad ids, kinds, roles, NUL or lone surrogates, ...
    │   └── IdempotencyMismatch (422)    same idempotency key, different payload
    ├── TooLarge (413)                   an event, append, metadata or state over its limit
    ├── BackendUnavailable (503)         the database cannot be reached (after retries)
    └── SchemaMismatch (500)             the database schema is older or newer than this code

Driver errors are translated to these at one boundary inside each backend and raised
``from`` the original. Messages never contain connection strings with passwords.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "BranchNotFound",
    "ChatstateError",
    "Conflict",
    "IdempotencyInProgress",
    "IdempotencyMismatch",
    "InvalidInput",
    "NotFound",
    "SchemaMismatch",
    "SeqConflict",
    "SessionExpired",
    "SessionNotFound",
    "StateVersionConflict",
    "TooLarge",
    "ValidationError",
]


class ChatstateError(Exception):
    """Root of every error chatstate raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The error as a JSON-friendly body: ``{"error": code, "message": ...}``."""
        return {"error": self.code, "message": self.message}


class NotFound(ChatstateError):
    status = 404
    code = "not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class SessionExpired(SessionNotFound):
    """The session's TTL has passed; it will be purged. Maps to 410 Gone."""

    status = 410
    code = "session_expired"


class BranchNotFound(NotFound):
    code = "branch_not_found"


class Conflict(ChatstateError):
    status = 409
    code = "conflict"


class SeqConflict(Conflict):
    """``append(expected_seq=...)`` did not match the branch head. Nothing was written.

    HTTP callers that sent ``If-Match`` should answer 412; the store says 409.
    """

    code = "seq_conflict"

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "expected_seq": self.expected, "actual_seq": self.actual}


class StateVersionConflict(Conflict):
    code = "state_version_conflict"

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def to_dict(self) -> dict[str, object]:
        return {
            **super().to_dict(),
            "expected_version": self.expected,
            "actual_version": self.actual,
        }


class AlreadyExists(Conflict):
    code = "already_exists"


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"


class InvalidInput(ChatstateError):
    status = 422
    code = "invalid_input"


class ValidationError(InvalidInput):
    code = "validation_error"


class IdempotencyMismatch(InvalidInput):
    """The idempotency key was used before with a different payload."""

    code = "idempotency_mismatch"


class TooLarge(ChatstateError):
    status = 413
    code = "too_large"


class BackendUnavailable(ChatstateError):
    status = 503
    code = "backend_unavailable"


class SchemaMismatch(ChatstateError):
    """The database schema does not match this version of chatstate.

    ``fix`` holds the command that repairs it (usually ``chatstate migrate``).
    """

    code = "schema_mismatch"

    def __init__(self, message: str, *, fix: str) -> None:
        super().__init__(f"{message}; fix: {fix}")
        self.fix = fix
