-- The embedded queue (used when queue.url = "embedded"): messages live in the
-- database, claimed with a visibility timeout, retried by making them visible
-- later, and dead-lettered by state. Same columns as ../postgres/0002.
CREATE TABLE queue_messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    partition_key    TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    body             TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    visible_at_ms    INTEGER NOT NULL,
    locked_by        TEXT,
    locked_until_ms  INTEGER,
    last_error       TEXT,
    enqueued_at_ms   INTEGER NOT NULL,
    dead_at_ms       INTEGER
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, state, visible_at_ms, seq);
