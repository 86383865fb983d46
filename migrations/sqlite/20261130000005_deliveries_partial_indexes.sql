-- A delivery that succeeds at its first attempt is now written once, already delivered
-- (src/forward/fresh.rs). The indexes that find pending and unfinished deliveries cover only
-- those rows, so such a row touches no index but the one by event, which grows at its end.
DROP INDEX deliveries_due;
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_unfinished ON deliveries (sink, status) WHERE status IN ('pending', 'dead');
