-- One row per step of a sync run delivered through the queue (sync apply): the
-- handler claims it before the vendor write and finishes it after, so a
-- redelivered step is recognised (done: skipped; a create still 'started':
-- possibly written, never repeated). Same as ../postgres/0004.
CREATE TABLE run_steps (
    run_id      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    target      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);
