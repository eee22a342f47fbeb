-- After payment (issue 4): fulfilment, cancel after payment, admin orders, redemption codes
-- and quotas. SQLite cannot change a CHECK constraint in place, so `orders`, `holds` and
-- `ledger` are rebuilt (create, copy, drop, rename), which PostgreSQL runs just as well.

-- What a SKU is, and how many a user may hold at once (open orders plus active entitlements).
ALTER TABLE skus ADD COLUMN kind TEXT NOT NULL DEFAULT 'physical' CHECK (kind IN ('digital', 'physical'));
ALTER TABLE skus ADD COLUMN quota BIGINT CHECK (quota IS NULL OR quota >= 0);

-- Units of each line counted against its SKU's quota (0 when the SKU had none).
ALTER TABLE order_items ADD COLUMN quota_units BIGINT NOT NULL DEFAULT 0 CHECK (quota_units >= 0);

-- Orders gain `fulfilled`, how they were paid, and whether each was its user's first purchase.
CREATE TABLE orders_v3 (
    order_id          TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'fulfilled', 'cancelled', 'rejected')),
    currency          TEXT NOT NULL,
    total_amount      BIGINT NOT NULL CHECK (total_amount >= 0),
    coupon_amount     BIGINT NOT NULL CHECK (coupon_amount >= 0),
    points_amount     BIGINT NOT NULL CHECK (points_amount >= 0),
    wallet_amount     BIGINT NOT NULL CHECK (wallet_amount >= 0),
    payable_amount    BIGINT NOT NULL CHECK (payable_amount >= 0),
    coupon_id         TEXT,
    expires_at        BIGINT,
    cancel_reason     TEXT,
    reject_code       TEXT,
    reject_message    TEXT,
    idempotency_key   TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    paid_at           BIGINT,
    cancelled_at      BIGINT,
    payment_method    TEXT NOT NULL DEFAULT 'online' CHECK (payment_method IN ('online', 'wallet', 'offline')),
    is_first_purchase BIGINT NOT NULL DEFAULT 0 CHECK (is_first_purchase IN (0, 1)),
    fulfilled_at      BIGINT,
    CHECK (total_amount = coupon_amount + points_amount + wallet_amount + payable_amount),
    CHECK (status NOT IN ('paid', 'fulfilled') OR expires_at IS NULL)
);
INSERT INTO orders_v3 (order_id, user_id, status, currency, total_amount, coupon_amount, points_amount,
    wallet_amount, payable_amount, coupon_id, expires_at, cancel_reason, reject_code, reject_message,
    idempotency_key, request_hash, created_at, updated_at, paid_at, cancelled_at)
SELECT order_id, user_id, status, currency, total_amount, coupon_amount, points_amount,
    wallet_amount, payable_amount, coupon_id, expires_at, cancel_reason, reject_code, reject_message,
    idempotency_key, request_hash, created_at, updated_at, paid_at, cancelled_at FROM orders;
DROP TABLE orders;
ALTER TABLE orders_v3 RENAME TO orders;
CREATE INDEX orders_by_status_expires ON orders (status, expires_at);
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, order_id);
CREATE INDEX orders_by_created ON orders (created_at, order_id);

-- Holds gain `returned`: captured, then given back (cancel after payment). The ledger gains
-- the matching `return` action.
CREATE TABLE holds_v3 (
    order_id   TEXT NOT NULL,
    resource   TEXT NOT NULL CHECK (resource IN ('stock', 'coupon', 'points', 'wallet')),
    subject    TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'captured', 'returned')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource)
);
INSERT INTO holds_v3 SELECT order_id, resource, subject, amount, state, created_at, updated_at FROM holds;
DROP TABLE holds;
ALTER TABLE holds_v3 RENAME TO holds;

CREATE TABLE ledger_v3 (
    order_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('reserve', 'release', 'capture', 'return')),
    subject  TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource, action)
);
INSERT INTO ledger_v3 SELECT order_id, resource, action, subject, amount, at FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_v3 RENAME TO ledger;

-- What a user was granted: by an order (one per order line) or by a redemption code.
CREATE TABLE entitlements (
    entitlement_id TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    sku            TEXT NOT NULL,
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    source         TEXT NOT NULL CHECK (source IN ('order', 'redemption')),
    source_id      TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    granted_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX entitlements_by_user_sku ON entitlements (user_id, sku, status);
CREATE INDEX entitlements_by_source ON entitlements (source_id);

-- One shipment per order with physical goods: pending, then shipped or intercepted (cancel).
CREATE TABLE shipments (
    order_id       TEXT PRIMARY KEY,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'intercepted')),
    created_at     BIGINT NOT NULL,
    shipped_at     BIGINT,
    intercepted_at BIGINT
);

-- Redemption codes: `used_count` never exceeds `max_uses`, enforced by the database too.
CREATE TABLE redemption_codes (
    code       TEXT PRIMARY KEY,
    sku        TEXT NOT NULL,
    max_uses   BIGINT NOT NULL CHECK (max_uses > 0),
    used_count BIGINT NOT NULL DEFAULT 0 CHECK (used_count >= 0),
    created_at BIGINT NOT NULL,
    CHECK (used_count <= max_uses)
);

-- A user redeems a code at most once: the key.
CREATE TABLE redemptions (
    code           TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    redeemed_at    BIGINT NOT NULL,
    -- Units counted against the SKU's quota (0 if it had none).
    quota_units    BIGINT NOT NULL DEFAULT 0 CHECK (quota_units >= 0),
    PRIMARY KEY (code, user_id)
);

-- Per user and quota'd SKU: units in open orders plus active entitlements. Moved in the same
-- transaction as the stock hold or the redemption, with a conditional update against the quota.
CREATE TABLE quota_usage (
    user_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    used    BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (user_id, sku)
);

-- The first order of each user to be paid. The key decides it under concurrency.
CREATE TABLE first_purchases (
    user_id  TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    at       BIGINT NOT NULL
);
