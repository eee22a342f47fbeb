-- Reverts 20261121000002_payments: the operation log keeps its status changes only.
CREATE TABLE order_events_v1 (
    order_id    TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (order_id, to_status)
);
INSERT INTO order_events_v1 (order_id, from_status, to_status, reason, at)
    SELECT order_id, from_status, to_status, reason, at FROM order_events WHERE step LIKE 'status:%';
DROP TABLE order_events;
ALTER TABLE order_events_v1 RENAME TO order_events;
DROP TABLE refunds;
DROP TABLE webhook_inbox;
DROP TABLE checkout_sessions;
