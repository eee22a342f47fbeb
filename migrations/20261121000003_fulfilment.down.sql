-- Reverts 20261121000003_fulfilment. Lossy by nature: `fulfilled` orders become `paid`,
-- `returned` holds become `released` and their `return` ledger rows `release`.
DROP TABLE first_purchases;
DROP TABLE quota_usage;
DROP TABLE redemptions;
DROP TABLE redemption_codes;
DROP TABLE shipments;
DROP TABLE entitlements;

CREATE TABLE ledger_v2 (
    order_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('reserve', 'release', 'capture')),
    subject  TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource, action)
);
INSERT INTO ledger_v2 SELECT order_id, resource, action, subject, amount, at FROM ledger WHERE action <> 'return';
DROP TABLE ledger;
ALTER TABLE ledger_v2 RENAME TO ledger;

CREATE TABLE holds_v2 (
    order_id   TEXT NOT NULL,
    resource   TEXT NOT NULL CHECK (resource IN ('stock', 'coupon', 'points', 'wallet')),
    subject    TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'captured')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource)
);
INSERT INTO holds_v2 SELECT order_id, resource, subject, amount,
    CASE WHEN state = 'returned' THEN 'released' ELSE state END, created_at, updated_at FROM holds;
DROP TABLE holds;
ALTER TABLE holds_v2 RENAME TO holds;

CREATE TABLE orders_v2 (
    order_id        TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'rejected')),
    currency        TEXT NOT NULL,
    total_amount    BIGINT NOT NULL CHECK (total_amount >= 0),
    coupon_amount   BIGINT NOT NULL CHECK (coupon_amount >= 0),
    points_amount   BIGINT NOT NULL CHECK (points_amount >= 0),
    wallet_amount   BIGINT NOT NULL CHECK (wallet_amount >= 0),
    payable_amount  BIGINT NOT NULL CHECK (payable_amount >= 0),
    coupon_id       TEXT,
    expires_at      BIGINT,
    cancel_reason   TEXT,
    reject_code     TEXT,
    reject_message  TEXT,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    paid_at         BIGINT,
    cancelled_at    BIGINT,
    CHECK (total_amount = coupon_amount + points_amount + wallet_amount + payable_amount),
    CHECK (status <> 'paid' OR expires_at IS NULL)
);
INSERT INTO orders_v2 SELECT order_id, user_id, CASE WHEN status = 'fulfilled' THEN 'paid' ELSE status END,
    currency, total_amount, coupon_amount, points_amount, wallet_amount, payable_amount, coupon_id,
    expires_at, cancel_reason, reject_code, reject_message, idempotency_key, request_hash, created_at,
    updated_at, paid_at, cancelled_at FROM orders;
DROP TABLE orders;
ALTER TABLE orders_v2 RENAME TO orders;
CREATE INDEX orders_by_status_expires ON orders (status, expires_at);
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, order_id);
CREATE INDEX orders_by_created ON orders (created_at, order_id);

CREATE TABLE order_items_v2 (
    order_id   TEXT NOT NULL,
    sku        TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, sku)
);
INSERT INTO order_items_v2 SELECT order_id, sku, quantity, unit_price FROM order_items;
DROP TABLE order_items;
ALTER TABLE order_items_v2 RENAME TO order_items;

CREATE TABLE skus_v2 (
    sku        TEXT PRIMARY KEY,
    price      BIGINT NOT NULL CHECK (price >= 0),
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold       BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at BIGINT NOT NULL
);
INSERT INTO skus_v2 SELECT sku, price, available, reserved, sold, updated_at FROM skus;
DROP TABLE skus;
ALTER TABLE skus_v2 RENAME TO skus;
-- (end)
