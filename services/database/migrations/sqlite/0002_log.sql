-- The cluster's activity log: append-only, time-indexed, pruned by age.
CREATE TABLE log_entries (
    id      TEXT   PRIMARY KEY,
    at      BIGINT NOT NULL,
    node    TEXT   NOT NULL,
    level   TEXT   NOT NULL,
    kind    TEXT   NOT NULL,
    message TEXT   NOT NULL,
    fields  TEXT   NOT NULL
);
CREATE INDEX log_entries_by_time ON log_entries (at, id);
CREATE INDEX log_entries_by_kind ON log_entries (kind, at);
