-- Authorize at checkout, capture at shipment, void instead of refund (issue 14, points 1-2).
-- A payment made on a manual-capture session is only authorized: `capture_before` (Unix ms)
-- says until when it can be captured, and `captured_at` when it was (at shipment, or before the
-- authorization lapsed). A payment captured at once has neither. A refund of an authorization
-- that was never captured is a void (`method = 'void'`): nothing was charged, nothing is paid
-- back, and the provider holds no refund for it.
ALTER TABLE payments ADD COLUMN capture_before BIGINT;
ALTER TABLE payments ADD COLUMN captured_at BIGINT;
ALTER TABLE webhook_inbox ADD COLUMN capture_before BIGINT;
ALTER TABLE refunds ADD COLUMN method TEXT NOT NULL DEFAULT 'refund'
    CHECK (method IN ('refund', 'void'));
