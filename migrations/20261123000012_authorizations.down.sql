ALTER TABLE refunds DROP COLUMN method;
ALTER TABLE webhook_inbox DROP COLUMN capture_before;
ALTER TABLE payments DROP COLUMN captured_at;
ALTER TABLE payments DROP COLUMN capture_before;
