-- chatstate SQLite schema, version 2: the state document belongs to a branch.
-- One row per (session, branch); the rows written before, one per session, become the
-- documents of their session's main branch, with their version kept.

CREATE TABLE state_by_branch (
    sid        INTEGER NOT NULL,
    branch     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (sid, branch)
) WITHOUT ROWID;

INSERT INTO state_by_branch (sid, branch, version, data, updated_us)
    SELECT sid, 'main', version, data, updated_us FROM state;

DROP TABLE state;

ALTER TABLE state_by_branch RENAME TO state;
