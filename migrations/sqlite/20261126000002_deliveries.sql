-- Forwarding (outbox): one row per (event, sink) to deliver, and how far each sink has
-- looked through the events table. Event rows are never written here, so forwarding does
-- not touch the ingest path.
CREATE TABLE forward_cursors (
    sink          TEXT PRIMARY KEY,
    last_event_id INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        INTEGER NOT NULL,
    sink            TEXT NOT NULL,
    -- pending | delivered | dead
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- RFC 3339 UTC with fixed-width microseconds, so text order is time order.
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_error      TEXT
);

CREATE INDEX deliveries_due ON deliveries (sink, status, next_attempt_at);
CREATE INDEX deliveries_pending ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
