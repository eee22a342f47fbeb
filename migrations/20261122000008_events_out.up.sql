-- Events out to other services (issue 14, point 5): a transactional outbox.
--
-- An admin registers a subscriber URL and gets a secret that signs every delivery.
-- `event_types` is the list it wants, comma-separated with a comma at each end
-- (`,order.paid,order.cancelled,`), so that one LIKE picks the subscribers of a type.
-- `disabled_at` stops deliveries to it; nothing is deleted.
CREATE TABLE event_subscriptions (
    subscription_id TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    event_types     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);

-- Every event orderflow publishes, written in the same transaction as the change it reports
-- (the `order_events` step it comes from). `seq` numbers an order's events from 1: receivers
-- get them in that order. The body is fixed when the event is written.
-- `orders.event_seq` is the last `seq` an order gave out: incrementing it locks the order's
-- row, so that two transactions of one order (its workflow and a refund, say) never take the
-- same number on PostgreSQL.
ALTER TABLE orders ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE outbox_events (
    event_id   TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL,
    seq        BIGINT NOT NULL CHECK (seq >= 1),
    event_type TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (order_id, seq)
);

-- One row per (subscriber, event), written with the event: the delivery's state.
-- `pending` is retried with backoff for the dispatcher's retry period from `retry_from` (the
-- event's time, or a redelivery's), then `failed` (ops may redeliver);
-- `delivered` is final. `lease_until` keeps two dispatchers off one delivery at once; an
-- expired lease (a worker killed mid-delivery) lets the next one take it.
CREATE TABLE event_deliveries (
    subscription_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    order_id         TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  BIGINT NOT NULL,
    retry_from       BIGINT NOT NULL,
    lease_until      BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX event_deliveries_due ON event_deliveries (status, next_attempt_at);
CREATE INDEX event_deliveries_by_order ON event_deliveries (subscription_id, order_id, seq);

-- Every attempt, for ops: what was answered, or why nothing was.
CREATE TABLE event_delivery_attempts (
    subscription_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    status_code     BIGINT,
    error           TEXT,
    PRIMARY KEY (subscription_id, event_id, attempt)
);
