-- chatstate PostgreSQL schema, version 1.
--
-- Every table's primary key starts with (tenant_id, session_id), so each can be distributed
-- by that pair (Citus-style, co-located) without redesign: every statement chatstate runs
-- names one tenant and session, except the maintenance function chatstate_purge_expired.
-- Times are bigint microseconds since the epoch, taken from the application's clock.
-- Ids are ASCII (see chatstate.store.rules.check_id); COLLATE "C" makes their order the
-- code-point order every backend uses, and keeps the indexes cheap.

CREATE TABLE sessions (
    tenant_id      text COLLATE "C" NOT NULL,
    session_id     text COLLATE "C" NOT NULL,
    user_id        text COLLATE "C",
    metadata       text NOT NULL,  -- JSON text exactly as the codec wrote it
    metadata_jsonb jsonb GENERATED ALWAYS AS (metadata::jsonb) STORED,  -- for filters
    ttl_seconds    double precision,
    created_us     bigint NOT NULL,
    updated_us     bigint NOT NULL,
    expires_us     bigint,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX sessions_by_created ON sessions (tenant_id, created_us DESC, session_id DESC);
CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id, created_us DESC, session_id DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_us) WHERE expires_us IS NOT NULL;

CREATE TABLE branches (
    tenant_id  text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    ord        integer NOT NULL,  -- creation order within the session; main is 0
    parent     text COLLATE "C",
    fork_seq   bigint,
    head_seq   bigint NOT NULL,
    created_us bigint NOT NULL,
    PRIMARY KEY (tenant_id, session_id, name)
);

-- One row per event, in the log of the branch it was appended to.
CREATE TABLE events (
    tenant_id       text COLLATE "C" NOT NULL,
    session_id      text COLLATE "C" NOT NULL,
    branch          text COLLATE "C" NOT NULL,
    seq             bigint NOT NULL,
    created_us      bigint NOT NULL,
    token_count     bigint,
    idempotency_key text COLLATE "C",
    body            text NOT NULL,  -- one JSON document carrying its schema version ("v")
    PRIMARY KEY (tenant_id, session_id, branch, seq)
);

CREATE TABLE idempotency (
    tenant_id   text COLLATE "C" NOT NULL,
    session_id  text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    branch      text COLLATE "C" NOT NULL,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    created_us  bigint NOT NULL,
    PRIMARY KEY (tenant_id, session_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_us);

CREATE TABLE state (
    tenant_id  text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    body       text NOT NULL,
    updated_us bigint NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

-- Row-level security by tenant. The owner of the tables bypasses it; a separate
-- application role (PostgresStore(row_level_security=True)) sees only the tenant named by
-- the transaction-local setting chatstate.tenant_id, and nothing when it is unset.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sessions', 'branches', 'events', 'idempotency', 'state'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''chatstate.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''chatstate.tenant_id'', true))',
            t
        );
    END LOOP;
END
$$;

-- Hard-delete sessions and everything in them. The caller has locked the session rows.
CREATE FUNCTION chatstate_drop_sessions(p_tenants text[], p_ids text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM events e USING unnest(p_tenants, p_ids) AS d(t, s)
        WHERE e.tenant_id = d.t AND e.session_id = d.s;
    DELETE FROM branches b USING unnest(p_tenants, p_ids) AS d(t, s)
        WHERE b.tenant_id = d.t AND b.session_id = d.s;
    DELETE FROM idempotency i USING unnest(p_tenants, p_ids) AS d(t, s)
        WHERE i.tenant_id = d.t AND i.session_id = d.s;
    DELETE FROM state x USING unnest(p_tenants, p_ids) AS d(t, s)
        WHERE x.tenant_id = d.t AND x.session_id = d.s;
    DELETE FROM sessions x USING unnest(p_tenants, p_ids) AS d(t, s)
        WHERE x.tenant_id = d.t AND x.session_id = d.s;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Remove expired sessions of every tenant and stale idempotency records. It runs with the
-- owner's rights, so an application role under row-level security can call it.
CREATE FUNCTION chatstate_purge_expired(p_now_us bigint, p_idempotency_before_us bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    tenants text[];
    ids text[];
BEGIN
    SELECT coalesce(array_agg(x.tenant_id), '{}'), coalesce(array_agg(x.session_id), '{}')
        INTO tenants, ids
        FROM (
            SELECT tenant_id, session_id FROM sessions
            WHERE expires_us <= p_now_us
            ORDER BY tenant_id, session_id
            FOR UPDATE
        ) AS x;
    PERFORM chatstate_drop_sessions(tenants, ids);
    DELETE FROM idempotency WHERE created_us <= p_idempotency_before_us;
    RETURN cardinality(ids);
END
$$;

-- A SECURITY DEFINER function must not resolve names through a caller-controlled path.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION chatstate_purge_expired(bigint, bigint) SET search_path = %I, pg_temp',
        current_schema()
    );
END
$$;
REVOKE ALL ON FUNCTION chatstate_purge_expired(bigint, bigint) FROM PUBLIC;
