-- chatstate SQLite schema, version 1.
-- Sessions and branches get integer surrogate keys (sid, bid) so the event table stays small.
-- An event's rowid is (bid << 32) | seq: one B-tree, ordered by branch then seq, with no
-- secondary index; a branch's range is a rowid range scan.

CREATE TABLE sessions (
    sid            INTEGER PRIMARY KEY,
    tenant_id      TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    user_id        TEXT,
    metadata       TEXT    NOT NULL,
    created_us     INTEGER NOT NULL,
    updated_us     INTEGER NOT NULL,
    ttl_seconds    REAL,
    expires_us     INTEGER,
    default_branch TEXT    NOT NULL DEFAULT 'main',
    UNIQUE (tenant_id, session_id)
);
CREATE INDEX sessions_by_created ON sessions (tenant_id, created_us DESC, session_id DESC);
CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_us) WHERE expires_us IS NOT NULL;

CREATE TABLE branches (
    bid        INTEGER PRIMARY KEY,
    sid        INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    parent     TEXT,
    fork_seq   INTEGER,
    head_seq   INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    UNIQUE (sid, name)
);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY,  -- (bid << 32) | seq
    created_us      INTEGER NOT NULL,
    token_count     INTEGER,
    idempotency_key TEXT,
    body            TEXT    NOT NULL      -- one JSON document, carrying its schema version
);

CREATE TABLE idempotency (
    sid         INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    created_us  INTEGER NOT NULL,
    PRIMARY KEY (sid, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_us);

CREATE TABLE state (
    sid        INTEGER PRIMARY KEY,
    version    INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    updated_us INTEGER NOT NULL
);
