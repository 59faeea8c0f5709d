-- The chat's schema on SQLite. Times are milliseconds since the Unix epoch.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT   NOT NULL,
    username_key  TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT   PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE rooms (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT   NOT NULL,
    name_key     TEXT   NOT NULL UNIQUE,
    topic        TEXT   NOT NULL,
    created_by   BIGINT NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL,
    member_count BIGINT NOT NULL DEFAULT 0,
    -- The last message seq and event cursor handed out; bumped under the row lock, which is what
    -- makes both gapless and ordered by commit.
    last_seq     BIGINT NOT NULL DEFAULT 0,
    last_cursor  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE memberships (
    room_id   BIGINT NOT NULL REFERENCES rooms (id),
    user_id   BIGINT NOT NULL REFERENCES users (id),
    role      TEXT   NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    BIGINT NOT NULL REFERENCES rooms (id),
    seq        BIGINT NOT NULL,
    author_id  BIGINT NOT NULL REFERENCES users (id),
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at  BIGINT NOT NULL DEFAULT 0,
    deleted_at BIGINT NOT NULL DEFAULT 0,
    deleted_by BIGINT NOT NULL DEFAULT 0,
    UNIQUE (room_id, seq)
);

CREATE TABLE message_edits (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    BIGINT NOT NULL REFERENCES messages (id),
    previous_body TEXT   NOT NULL,
    edited_by     BIGINT NOT NULL,
    edited_at     BIGINT NOT NULL
);

CREATE TABLE room_events (
    room_id    BIGINT NOT NULL REFERENCES rooms (id),
    cursor     BIGINT NOT NULL,
    payload    BLOB   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, cursor)
);
CREATE INDEX room_events_by_age ON room_events (created_at);

CREATE TABLE idempotency_keys (
    user_id     BIGINT NOT NULL REFERENCES users (id),
    key         TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    response    BLOB   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
