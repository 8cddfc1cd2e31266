-- chatstate PostgreSQL schema, version 2: the state document belongs to a branch.
-- One row per (tenant, session, branch); the rows written before, one per session, become
-- the documents of their session's main branch, with their version kept. The primary key
-- still starts with (tenant_id, session_id), the distribution key.

ALTER TABLE state ADD COLUMN branch text COLLATE "C" NOT NULL DEFAULT 'main';
ALTER TABLE state ALTER COLUMN branch DROP DEFAULT;
ALTER TABLE state DROP CONSTRAINT state_pkey;
ALTER TABLE state ADD PRIMARY KEY (tenant_id, session_id, branch);
