DROP TABLE user_locks;
DROP INDEX webhook_inbox_by_order;
ALTER TABLE webhook_inbox DROP COLUMN session_id;
DROP TABLE payment_decisions;
ALTER TABLE refunds DROP COLUMN owner;
ALTER TABLE refunds DROP COLUMN attempt;
