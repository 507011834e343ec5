-- The embedded queue (used when queue.url = "embedded"): messages live in the
-- database, claimed with a visibility timeout, retried by making them visible
-- later, and dead-lettered by state. Same columns as ../sqlite/0002.
CREATE TABLE queue_messages (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    partition_key    TEXT    NOT NULL,
    attempt          BIGINT  NOT NULL,
    body             JSONB   NOT NULL,
    state            TEXT    NOT NULL,
    visible_at_ms    BIGINT  NOT NULL,
    locked_by        TEXT,
    locked_until_ms  BIGINT,
    last_error       TEXT,
    enqueued_at_ms   BIGINT  NOT NULL,
    dead_at_ms       BIGINT
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, state, visible_at_ms, seq);
