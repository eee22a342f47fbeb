-- Reconciliation (issue 5): what each run of the `reconcile` workflow found and did.
CREATE TABLE reconcile_log (
    run_id   TEXT NOT NULL,
    order_id TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('repaired', 'reported', 'purged')),
    detail   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (run_id, order_id, action)
);
CREATE INDEX reconcile_log_by_order ON reconcile_log (order_id);
