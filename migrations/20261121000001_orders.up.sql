-- orderflow schema, portable between SQLite and PostgreSQL (the same file runs on both).
-- Money is BIGINT minor units, times are BIGINT Unix milliseconds: no floats, no time zones,
-- and nothing that sqlx's Any driver cannot carry. CHECK constraints make the database itself
-- refuse a write that would create or destroy money.

-- Catalogue. available + reserved + sold only changes when an admin sets the stock.
CREATE TABLE skus (
    sku        TEXT PRIMARY KEY,
    price      BIGINT NOT NULL CHECK (price >= 0),
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold       BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at BIGINT NOT NULL
);

-- Coupons belong to a user. An `amount` coupon spends its balance in parts; a `discount`
-- coupon is single-use and moves whole from balance to reserved to used. Status is derived
-- from these columns, never stored: a release can never miss a row because of a status filter.
CREATE TABLE coupons (
    coupon_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('amount', 'discount')),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    balance    BIGINT NOT NULL CHECK (balance >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    used       BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    created_at BIGINT NOT NULL,
    CHECK (balance + reserved + used = amount)
);
CREATE INDEX coupons_by_user ON coupons (user_id);

-- Wallet funds: freezing moves balance to frozen, capture moves frozen to spent.
CREATE TABLE wallets (
    user_id    TEXT PRIMARY KEY,
    balance    BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    frozen     BIGINT NOT NULL DEFAULT 0 CHECK (frozen >= 0),
    spent      BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0),
    credited   BIGINT NOT NULL DEFAULT 0 CHECK (credited >= 0),
    updated_at BIGINT NOT NULL,
    CHECK (balance + frozen + spent = credited)
);

-- Points: one point is one minor unit. Same shape as wallets.
CREATE TABLE points_accounts (
    user_id    TEXT PRIMARY KEY,
    balance    BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    spent      BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0),
    credited   BIGINT NOT NULL DEFAULT 0 CHECK (credited >= 0),
    updated_at BIGINT NOT NULL,
    CHECK (balance + reserved + spent = credited)
);

-- Orders. The id is derived from (user_id, Idempotency-Key) by a hash: not sequential.
-- The workflow writes the row once its reservations are decided.
CREATE TABLE orders (
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
-- The expiry scan and the `status`/`is_expired` filters of GET /v1/orders.
CREATE INDEX orders_by_status_expires ON orders (status, expires_at);
-- Newest first, per user and overall (keyset pagination on (created_at, order_id)).
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, order_id);
CREATE INDEX orders_by_created ON orders (created_at, order_id);

CREATE TABLE order_items (
    order_id   TEXT NOT NULL,
    sku        TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, sku)
);

-- The operation log. An order enters each status at most once, so the key makes the insert
-- idempotent when an activity is retried.
CREATE TABLE order_events (
    order_id    TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (order_id, to_status)
);

-- What an order holds of each resource, and where that hold is: reserved, then released or
-- captured, never both. One row per (order, resource): concurrent attempts serialise on the key.
-- A release of something never reserved writes a `released` tombstone (amount 0), so that a
-- reservation attempt still in flight can no longer take it.
CREATE TABLE holds (
    order_id   TEXT NOT NULL,
    resource   TEXT NOT NULL CHECK (resource IN ('stock', 'coupon', 'points', 'wallet')),
    subject    TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'captured')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource)
);

-- Append-only ledger: one row per (order, resource, action), written in the same transaction
-- as the hold transition. The unique key is what makes a retried activity a no-op.
CREATE TABLE ledger (
    order_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('reserve', 'release', 'capture')),
    subject  TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (order_id, resource, action)
);

-- Payments reported by the provider. `payment_id` is unique: a duplicate webhook cannot create
-- a second row. `unapplied` payments (late, duplicate, wrong amount) are owed back to the payer.
CREATE TABLE payments (
    payment_id  TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount >= 0),
    currency    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('captured', 'unapplied')),
    reason      TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id);
