-- huitong foundation schema (SQLite). Times are epoch milliseconds (INTEGER);
-- JSON is TEXT. Kept column-for-column identical to ../postgres/0001_foundation.sql.

CREATE TABLE canonical_records (
    entity          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    content_hash    TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    source_system   TEXT,
    source_time_ms  INTEGER,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (entity, id)
);

CREATE TABLE xrefs (
    entity             TEXT    NOT NULL,
    canonical_id       TEXT    NOT NULL,
    system             TEXT    NOT NULL,
    external_id        TEXT    NOT NULL,
    last_written_hash  TEXT,
    last_seen_hash     TEXT,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    PRIMARY KEY (entity, system, external_id),
    UNIQUE (entity, system, canonical_id)
);
CREATE INDEX xrefs_by_canonical ON xrefs (entity, canonical_id);

CREATE TABLE processed_events (
    source         TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX processed_events_expiry ON processed_events (expires_at_ms);

CREATE TABLE sync_runs (
    id              TEXT    PRIMARY KEY,
    route           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    status          TEXT    NOT NULL,
    counts          TEXT    NOT NULL,
    error           TEXT
);
CREATE INDEX sync_runs_by_route ON sync_runs (route, started_at_ms);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    before_data TEXT,
    after_data  TEXT
);

CREATE TABLE schedule_leases (
    name           TEXT    PRIMARY KEY,
    holder         TEXT    NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
