-- The web inbox: a conversation is every event from or to one number, newest first, paged
-- by id. An index for each end, in id order, answers it with two range scans and no sort.
-- A type filter pages the same way through its own index.
CREATE INDEX events_by_from ON events (from_number, id);
CREATE INDEX events_by_to ON events (to_number, id);
CREATE INDEX events_by_type_id ON events (event_type, id);
