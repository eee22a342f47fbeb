-- Payments done right (issue 3): checkout sessions, the webhook inbox, refunds, and an
-- operation log that records payment and refund steps as well as status changes.
-- Portable between SQLite and PostgreSQL, like the first migration.

-- Checkout sessions opened at the provider. Each one may have moved the order's deadline to
-- `expires_at` (start + checkout window, capped).
CREATE TABLE checkout_sessions (
    session_id TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    currency   TEXT NOT NULL,
    pay_url    TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX checkout_sessions_by_order ON checkout_sessions (order_id);

-- Every verified webhook, keyed by the provider's event id: a redelivered event is found here
-- and answered 200 without doing anything twice. `processed_at` is set once the event was
-- handed on (signal or refund workflow); an event received but not processed (a crash, an
-- outage) is processed again when the provider redelivers it. Retention: see README.
CREATE TABLE webhook_inbox (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    payment_id   TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX webhook_inbox_by_received ON webhook_inbox (received_at);
CREATE INDEX webhook_inbox_by_payment ON webhook_inbox (payment_id);

-- Refunds: at most one per payment (the key), always of the whole payment, recorded `pending`
-- before the provider is called, then `succeeded` or `failed`.
CREATE TABLE refunds (
    payment_id         TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL,
    amount             BIGINT NOT NULL CHECK (amount > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason             TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL UNIQUE,
    provider_refund_id TEXT,
    failure            TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    CHECK (status <> 'succeeded' OR provider_refund_id IS NOT NULL)
);
CREATE INDEX refunds_by_order ON refunds (order_id);

-- The operation log, rebuilt with a step key: `status:<to>` for status changes (as before),
-- `payment:<id>:<captured|unapplied>`, `checkout:<session>`, `refund:<id>:<pending|succeeded|failed>`.
CREATE TABLE order_events_v2 (
    order_id    TEXT NOT NULL,
    step        TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    payment_id  TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (order_id, step)
);
INSERT INTO order_events_v2 (order_id, step, from_status, to_status, reason, payment_id, at)
    SELECT order_id, 'status:' || to_status, from_status, to_status, reason, NULL, at FROM order_events;
DROP TABLE order_events;
ALTER TABLE order_events_v2 RENAME TO order_events;
