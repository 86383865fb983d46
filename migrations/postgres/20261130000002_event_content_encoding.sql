-- The Content-Encoding an event's body arrived in (gzip, deflate, br, or several in the order
-- the sender applied them); NULL when it came as it is. The body column always holds the
-- decoded entity.
ALTER TABLE events ADD COLUMN content_encoding TEXT;
