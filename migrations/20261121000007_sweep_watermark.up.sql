-- How far reconciliation's provider sweep has looked (issue 11): payments the provider
-- captured before `through` (Unix seconds) have all been checked against orderflow's records.
-- The next sweep lists only payments created since then (less an overlap), so that its cost is
-- the window, not every payment ever taken. Only a sweep that finished moves it, and only
-- forward.
CREATE TABLE sweep_watermarks (
    name       TEXT PRIMARY KEY,
    through    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
