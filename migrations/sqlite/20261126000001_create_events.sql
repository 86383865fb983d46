-- Every webhook delivery, with its exact raw body. Fields are extracted leniently and may be
-- NULL; the body is the record of truth.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- RFC 3339 UTC with fixed-width microseconds, so text order is time order.
    received_at  TEXT NOT NULL,
    content_type TEXT,
    remote_addr  TEXT,
    event_type   TEXT,
    direction    TEXT,
    from_number  TEXT,
    to_number    TEXT,
    message_id   TEXT,
    status       TEXT,
    error_code   TEXT,
    text         TEXT,
    body         BLOB NOT NULL,
    -- (event_type, message id, status or body hash); NULL for events without a message id,
    -- which are never deduplicated (SQLite treats NULLs as distinct in a unique index).
    dedup_key    TEXT UNIQUE
);

CREATE INDEX events_by_received_at ON events (received_at);
CREATE INDEX events_by_type ON events (event_type, received_at);

-- Each successful registerWebhook call, for the record.
CREATE TABLE registrations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL,
    url             TEXT NOT NULL,
    registered_at   TEXT NOT NULL,
    created_at      TEXT,
    last_updated_at TEXT
);
