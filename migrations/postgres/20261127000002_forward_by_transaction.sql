-- Forwarding on a store shared by several instances. Event ids are handed out when rows are
-- inserted, not when they commit: with several writers a smaller id can become visible after
-- a larger one, so a cursor over ids alone could pass an event for good. Each event records
-- the transaction that inserted it; the outbox only looks at events whose transaction is
-- older than every transaction still running, and follows them in (xid, id) order.
-- (pg_current_xact_id() is stable, so existing rows take this migration's id without a
-- table rewrite.)
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_by_xid ON events (xid, id);

-- The transaction part of each sink's cursor: the sink has looked at every event up to
-- (last_xid, last_event_id).
ALTER TABLE forward_cursors ADD COLUMN last_xid xid8 NOT NULL DEFAULT '0';
