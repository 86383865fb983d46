-- The result of checking Volt's X-Respond-Flow-Signature when the event arrived:
-- valid, invalid, missing, or unchecked (no key configured, or stored before checking existed).
ALTER TABLE events ADD COLUMN signature TEXT NOT NULL DEFAULT 'unchecked';
