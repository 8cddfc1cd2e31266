"""The SQL the PostgreSQL backend runs, in one place. Every statement names one tenant and
session (the distribution key), except the maintenance call :data:`PURGE`."""

# ruff: noqa: S608 - every query is built here from constants; values travel as parameters

from __future__ import annotations

from chatstate.model import DEFAULT_BRANCH

_COLS = "session_id, user_id, metadata, ttl_seconds, created_us, updated_us, expires_us"
S_COLS = ", ".join(f"s.{c}" for c in _COLS.split(", "))
"""The session columns, in the order ``postgres._session`` reads them."""

GET_SESSION = f"SELECT {_COLS} FROM sessions WHERE tenant_id = %s AND session_id = %s"
LOCK_SESSION = GET_SESSION + " FOR UPDATE"

CREATE_SESSION = f"""
WITH s AS (
    INSERT INTO sessions (tenant_id, session_id, user_id, metadata, ttl_seconds,
                          created_us, updated_us, expires_us)
    VALUES (%(t)s, %(s)s, %(user)s, %(meta)s, %(ttl)s, %(now)s, %(now)s, %(exp)s)
    ON CONFLICT (tenant_id, session_id) DO NOTHING
    RETURNING tenant_id, session_id
)
INSERT INTO branches (tenant_id, session_id, name, ord, head_seq, created_us)
SELECT tenant_id, session_id, '{DEFAULT_BRANCH}', 0, 0, %(now)s FROM s
RETURNING 1
"""

SET_TTL = f"""
UPDATE sessions SET ttl_seconds = %s, expires_us = %s, updated_us = %s
WHERE tenant_id = %s AND session_id = %s
RETURNING {_COLS}
"""

DROP_ONE = "SELECT chatstate_drop_sessions(ARRAY[%s::text], ARRAY[%s::text])"

LOCK_TENANT = "SELECT 1 FROM sessions WHERE tenant_id = %s ORDER BY session_id FOR UPDATE"
LOCK_USER = (
    "SELECT 1 FROM sessions WHERE tenant_id = %s AND user_id = %s ORDER BY session_id FOR UPDATE"
)
_DROP_ALL = (
    "SELECT chatstate_drop_sessions("
    "coalesce(array_agg(tenant_id), '{}'), coalesce(array_agg(session_id), '{}')) "
    "FROM sessions WHERE tenant_id = %s"
)
DROP_TENANT = _DROP_ALL
DROP_USER = _DROP_ALL + " AND user_id = %s"

PURGE = "SELECT chatstate_purge_expired(%s, %s)"

LIST_SESSIONS = f"SELECT {_COLS} FROM sessions WHERE tenant_id = %s"
LIST_LIVE = " AND (expires_us IS NULL OR expires_us > %s)"
LIST_USER = " AND user_id = %s"
LIST_AFTER = " AND (created_us, session_id) < (%s, %s)"
LIST_META = " AND metadata_jsonb -> %s = %s::jsonb"
LIST_ORDER = " ORDER BY created_us DESC, session_id DESC LIMIT %s"

# The session and all its branches; one row per branch, main (ord 0) first.
VIEW = f"""
SELECT {S_COLS}, b.name, b.head_seq, b.parent, b.fork_seq, b.created_us
FROM sessions s
LEFT JOIN branches b ON b.tenant_id = s.tenant_id AND b.session_id = s.session_id
WHERE s.tenant_id = %s AND s.session_id = %s
ORDER BY b.ord
"""

# Run after LOCK_SESSION, as its own statement, so it sees what the lock waited for.
APPEND_LOOKUP = """
SELECT (SELECT head_seq FROM branches
        WHERE tenant_id = %(t)s AND session_id = %(s)s AND name = %(b)s),
       i.fingerprint, i.branch, i.first_seq, i.last_seq, i.created_us
FROM (SELECT 1) AS one
LEFT JOIN idempotency i ON i.tenant_id = %(t)s AND i.session_id = %(s)s AND i.key = %(key)s
"""

APPEND_WRITE = """
WITH ev AS (
    INSERT INTO events (tenant_id, session_id, branch, seq, created_us, token_count,
                        idempotency_key, body)
    SELECT %(t)s, %(s)s, %(b)s, %(head)s + u.n, %(now)s, u.tc, %(key)s, u.body
    FROM unnest(%(tcs)s::bigint[], %(bodies)s::text[]) WITH ORDINALITY AS u(tc, body, n)
), br AS (
    UPDATE branches SET head_seq = %(last)s
    WHERE tenant_id = %(t)s AND session_id = %(s)s AND name = %(b)s
), se AS (
    UPDATE sessions SET updated_us = %(now)s, expires_us = %(exp)s
    WHERE tenant_id = %(t)s AND session_id = %(s)s
)
INSERT INTO idempotency (tenant_id, session_id, key, fingerprint, branch, first_seq, last_seq,
                         created_us)
SELECT %(t)s, %(s)s, %(key)s, %(fp)s, %(b)s, %(first)s, %(last)s, %(now)s
WHERE %(key)s::text IS NOT NULL
ON CONFLICT (tenant_id, session_id, key) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint, branch = EXCLUDED.branch,
    first_seq = EXCLUDED.first_seq, last_seq = EXCLUDED.last_seq,
    created_us = EXCLUDED.created_us
"""

_EVENTS = (
    "SELECT seq, created_us, token_count, idempotency_key, body FROM events "
    "WHERE tenant_id = %s AND session_id = %s AND branch = %s AND seq BETWEEN %s AND %s "
)
EVENTS_ASC = _EVENTS + "ORDER BY seq LIMIT %s"
EVENTS_DESC = _EVENTS + "ORDER BY seq DESC LIMIT %s"

BRANCHES = "SELECT name, head_seq, ord FROM branches WHERE tenant_id = %s AND session_id = %s"
CREATE_BRANCH = """
INSERT INTO branches (tenant_id, session_id, name, ord, parent, fork_seq, head_seq, created_us)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""

# The session, whether the branch exists, and the branch's state document (if any).
GET_STATE = f"""
SELECT {S_COLS}, b.name, st.version, st.body, st.updated_us
FROM sessions s
LEFT JOIN branches b
    ON b.tenant_id = s.tenant_id AND b.session_id = s.session_id AND b.name = %(b)s
LEFT JOIN state st
    ON st.tenant_id = s.tenant_id AND st.session_id = s.session_id AND st.branch = %(b)s
WHERE s.tenant_id = %(t)s AND s.session_id = %(s)s
"""
# Run after LOCK_SESSION: whether the branch exists, and its document's version.
STATE_VERSION = """
SELECT (SELECT name FROM branches
        WHERE tenant_id = %(t)s AND session_id = %(s)s AND name = %(b)s),
       (SELECT version FROM state
        WHERE tenant_id = %(t)s AND session_id = %(s)s AND branch = %(b)s)
"""
PUT_STATE = """
INSERT INTO state (tenant_id, session_id, branch, version, body, updated_us)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, session_id, branch) DO UPDATE SET
    version = EXCLUDED.version, body = EXCLUDED.body, updated_us = EXCLUDED.updated_us
"""
