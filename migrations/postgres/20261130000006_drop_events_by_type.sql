-- Every query that filters by type orders by id, and uses events_by_type_id (event_type, id).
-- events_by_type (event_type, received_at) served none, and cost each stored event one more
-- index entry and each commit one more page.
DROP INDEX IF EXISTS events_by_type;
