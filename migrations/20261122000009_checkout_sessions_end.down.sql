ALTER TABLE checkout_sessions DROP COLUMN closed_as;
ALTER TABLE checkout_sessions DROP COLUMN closed_at;
