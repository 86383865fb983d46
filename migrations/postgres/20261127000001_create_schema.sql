-- The same tables as the SQLite schema (migrations/sqlite), in PostgreSQL's types.

-- Every webhook delivery, with its exact raw body. Fields are extracted leniently and may be
-- NULL; the body is the record of truth.
CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  TIMESTAMPTZ NOT NULL,
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
    body         BYTEA NOT NULL,
    -- (event_type, message id, status or body hash); NULL for events without a message id,
    -- which are never deduplicated. The arbiter of exactly-once storage across instances.
    dedup_key    TEXT UNIQUE,
    -- The result of checking Volt's X-Respond-Flow-Signature: valid, invalid, missing or
    -- unchecked.
    signature    TEXT NOT NULL DEFAULT 'unchecked'
);

CREATE INDEX events_by_received_at ON events (received_at);
CREATE INDEX events_by_type ON events (event_type, received_at);

-- Each successful registerWebhook call, for the record.
CREATE TABLE registrations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    url             TEXT NOT NULL,
    registered_at   TIMESTAMPTZ NOT NULL,
    created_at      TEXT,
    last_updated_at TEXT
);

-- Forwarding (outbox): one row per (event, sink) to deliver, and how far each sink has
-- looked through the events table.
CREATE TABLE forward_cursors (
    sink          TEXT PRIMARY KEY,
    last_event_id BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        BIGINT NOT NULL,
    sink            TEXT NOT NULL,
    -- pending | delivered | dead
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_error      TEXT
);

CREATE INDEX deliveries_due ON deliveries (sink, status, next_attempt_at);
CREATE INDEX deliveries_pending ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
