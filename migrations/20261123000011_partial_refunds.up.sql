-- Partial refunds and returns (issue 14, point 4).
--
-- An admin refunds part of a paid order (an amount, or some lines), or a return of shipped
-- lines is received and refunded. Each is one `order_refunds` row, written `pending` with its
-- split over what paid the order (the payment, wallet, points, coupon; the rule is in the
-- README) before any money moves, then `succeeded` or `failed`. `value` is the part of the
-- order's total it gives back; the sum over an order's pending and succeeded refunds never
-- exceeds the order's total, and each source's never exceeds what that source paid. The
-- provider is asked with the row's own key (`order-refund-<refund_id>`), so a retry never
-- refunds twice. What a succeeded refund gave back of the wallet, points and coupon is counted
-- on the order's hold (`holds.returned_amount`); a returned line's restock on its item row
-- (`order_items.restocked`).
CREATE TABLE order_refunds (
    refund_id          TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL,
    payment_id         TEXT,
    kind               TEXT NOT NULL CHECK (kind IN ('amount', 'lines', 'return')),
    return_id          TEXT,
    reason             TEXT NOT NULL,
    lines              TEXT NOT NULL,
    value              BIGINT NOT NULL CHECK (value > 0),
    payment_amount     BIGINT NOT NULL CHECK (payment_amount >= 0),
    wallet_amount      BIGINT NOT NULL CHECK (wallet_amount >= 0),
    points_amount      BIGINT NOT NULL CHECK (points_amount >= 0),
    coupon_amount      BIGINT NOT NULL CHECK (coupon_amount >= 0),
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    idempotency_key    TEXT NOT NULL UNIQUE,
    request_hash       TEXT NOT NULL,
    provider_refund_id TEXT,
    failure            TEXT,
    requested_by       TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    CHECK (payment_amount + wallet_amount + points_amount + coupon_amount = value),
    CHECK (status <> 'succeeded' OR payment_amount = 0 OR provider_refund_id IS NOT NULL)
);
CREATE INDEX order_refunds_by_order ON order_refunds (order_id);

-- Returns of shipped lines: `requested` (by the customer or an admin), `received` (the goods
-- are back: restocked and refunded by the return's `order_refunds` row), then `refunded` or
-- `refund_failed` as that refund ends.
CREATE TABLE order_returns (
    return_id    TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    lines        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('requested', 'received', 'refunded', 'refund_failed')),
    refund_id    TEXT,
    request_hash TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX order_returns_by_order ON order_returns (order_id);

ALTER TABLE holds ADD COLUMN returned_amount BIGINT NOT NULL DEFAULT 0 CHECK (returned_amount >= 0);
ALTER TABLE order_items ADD COLUMN restocked BIGINT NOT NULL DEFAULT 0 CHECK (restocked >= 0);
