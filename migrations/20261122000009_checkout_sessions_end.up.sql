-- Checkout sessions end with their order (issue 14, point 3): when an order is cancelled, its
-- workflow expires the sessions still open at the provider and records it here. `closed_as`
-- is `expired`, or `paid` when the session's payment beat the expiry (that payment is refunded
-- like any other late one).
ALTER TABLE checkout_sessions ADD COLUMN closed_at BIGINT;
ALTER TABLE checkout_sessions ADD COLUMN closed_as TEXT CHECK (closed_as IN ('expired', 'paid'));
