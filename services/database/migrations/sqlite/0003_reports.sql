-- Content reports and their audit trail; a time index on messages for summaries and replays.
CREATE TABLE content_reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id     BIGINT NOT NULL REFERENCES rooms (id),
    message_id  BIGINT NOT NULL REFERENCES messages (id),
    reporter_id BIGINT NOT NULL REFERENCES users (id),
    reason      TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    resolved_at BIGINT NOT NULL DEFAULT 0,
    action      TEXT   NOT NULL DEFAULT '',
    note        TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX content_reports_by_status ON content_reports (status, id);

CREATE TABLE report_actions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id BIGINT NOT NULL REFERENCES content_reports (id),
    action    TEXT   NOT NULL,
    note      TEXT   NOT NULL,
    at        BIGINT NOT NULL
);

CREATE INDEX messages_by_time ON messages (created_at);
