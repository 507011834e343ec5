-- One row per (schedule, fire time): the primary key makes a fire happen once
-- across every huitong process sharing the database. Same as ../sqlite/0003.
CREATE TABLE schedule_fires (
    schedule        TEXT    NOT NULL,
    fire_time_ms    BIGINT  NOT NULL,
    holder          TEXT    NOT NULL,
    claimed_at_ms   BIGINT  NOT NULL,
    status          TEXT    NOT NULL,
    finished_at_ms  BIGINT,
    error           TEXT,
    detail          TEXT,
    missed_count    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule, fire_time_ms)
);
