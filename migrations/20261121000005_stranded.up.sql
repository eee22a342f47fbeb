-- Money is never stranded (issue 9): refunds owned by a durable run and retried with new keys,
-- and one durable decision per payment that its order could not take.

-- The refund row is the truth about a refund. `attempt` grows when ops retry a refund the
-- provider refused (each attempt has its own idempotency key: `refund-<payment>` for the first,
-- `refund-<payment>-<n>` after); `owner` is the workflow that runs the current attempt, so the
-- audit can tell a refund in flight from one nobody will finish.
ALTER TABLE refunds ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1 CHECK (attempt >= 1);
ALTER TABLE refunds ADD COLUMN owner TEXT;

-- Payments the webhook could not hand to their order (unknown order, wrong order, wrong amount
-- or currency, order workflow closed or missing). The `payment-<payment_id>` workflow decides
-- each: apply it to its order where that is still right, or refund it. `decide_at` is when the
-- decision is due (a payment for an unknown order waits, in case its order is still being
-- created).
CREATE TABLE payment_decisions (
    payment_id TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    currency   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('holding', 'applied', 'refunded', 'refund_failed', 'nothing_to_do')),
    detail     TEXT,
    decide_at  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payment_decisions_by_order ON payment_decisions (order_id);
-- The inbox keeps the event's checkout session, so that a re-drive checks it like the webhook.
ALTER TABLE webhook_inbox ADD COLUMN session_id TEXT;
CREATE INDEX webhook_inbox_by_order ON webhook_inbox (order_id);

-- One row per user that has reserved anything: reservations of one user lock it, so that the
-- open-order cap is counted exactly under concurrency (PostgreSQL; SQLite serialises writes).
CREATE TABLE user_locks (
    user_id TEXT PRIMARY KEY
);
