//! Reads and admin writes that the API needs: catalogue, coupons, wallets, points, orders.
//!
//! Admin writes are single statements with their invariants in the SQL (`WHERE` guards and the
//! schema's CHECK constraints). Nothing here changes an order's status: only the workflow does.

use crate::error::{Entity, StoreError};
use crate::{Db, now_ms};
use orderflow_workflows::model::{OrderStatus, PaymentMethod};
use sqlx::Row;

/// The largest amount one credit may add, and the largest a balance may reach: far from
/// `i64::MAX`, so sums over many accounts cannot overflow either.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Sku {
    pub sku: String,
    pub price: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// `digital` (fulfilled by an entitlement) or `physical` (by a shipment).
    pub kind: String,
    /// Units a user may have in open orders plus active entitlements; `None`: no limit.
    pub quota: Option<i64>,
}

/// What an admin sets on a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuSpec {
    pub price: i64,
    pub stock: i64,
    pub kind: String,
    pub quota: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Coupon {
    pub coupon_id: String,
    pub user_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance: i64,
    pub reserved: i64,
    pub used: i64,
}

impl Coupon {
    /// Derived, never stored: `available` while it has balance, `reserved` while an open order
    /// holds the rest, `used` when everything is spent.
    pub fn status(&self) -> &'static str {
        if self.balance > 0 {
            "available"
        } else if self.reserved > 0 {
            "reserved"
        } else {
            "used"
        }
    }
}

/// A wallet or points account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub user_id: String,
    pub balance: i64,
    pub held: i64,
    pub spent: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    pub payment_id: String,
    pub event_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reason: Option<String>,
    pub received_at: i64,
    /// An authorization: until when it can be captured, and when it was (Unix ms).
    pub capture_before: Option<i64>,
    pub captured_at: Option<i64>,
}

/// A refund of one payment (at most one per payment).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Refund {
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reason: String,
    pub provider_refund_id: Option<String>,
    pub failure: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `refund`, or `void` (an authorization released, nothing charged).
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub currency: String,
    pub total_amount: i64,
    pub coupon_amount: i64,
    pub points_amount: i64,
    pub wallet_amount: i64,
    pub payable_amount: i64,
    pub coupon_id: Option<String>,
    pub expires_at: Option<i64>,
    pub cancel_reason: Option<String>,
    pub reject_code: Option<String>,
    pub reject_message: Option<String>,
    pub request_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[sqlx(skip)]
    pub items: Vec<OrderItem>,
    #[sqlx(skip)]
    pub payments: Vec<Payment>,
    #[sqlx(skip)]
    pub refunds: Vec<Refund>,
    #[sqlx(try_from = "String")]
    pub payment_method: PaymentMethod,
    #[sqlx(try_from = "i64")]
    pub is_first_purchase: Flag,
    pub fulfilled_at: Option<i64>,
    /// The shipment's status, for orders with physical goods once paid.
    #[sqlx(skip)]
    pub shipment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderEvent {
    /// `status:<to>`, `checkout:<session>`, `payment:<id>:<status>`, `refund:<id>:<status>`.
    pub step: String,
    pub payment_id: Option<String>,
    #[sqlx(rename = "from_status")]
    pub from: Option<String>,
    #[sqlx(rename = "to_status")]
    pub to: String,
    pub reason: Option<String>,
    pub at: i64,
}

/// A 0/1 INTEGER column (portable across SQLite and PostgreSQL) read as a boolean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

/// A flag column that held neither 0 nor 1.
#[derive(Debug, thiserror::Error)]
#[error("a flag holds {0}, not 0 or 1")]
pub struct NotAFlag(i64);

impl TryFrom<i64> for Flag {
    type Error = NotAFlag;
    fn try_from(v: i64) -> Result<Flag, NotAFlag> {
        match v {
            0 | 1 => Ok(Flag(v == 1)),
            _ => Err(NotAFlag(v)),
        }
    }
}

fn too_large(what: &str) -> StoreError {
    StoreError::Invalid {
        code: "amount_too_large",
        message: format!("{what} would exceed {MAX_BALANCE}"),
    }
}

/// Creates a SKU or sets its price, available stock, kind and quota. Reserved and sold
/// quantities belong to orders and are kept.
pub async fn put_sku(db: &Db, sku: &str, spec: &SkuSpec) -> Result<Sku, StoreError> {
    sqlx::query(
        "INSERT INTO skus (sku, price, available, reserved, sold, updated_at, kind, quota) VALUES ($1, $2, $3, 0, 0, $4, $5, $6)
         ON CONFLICT (sku) DO UPDATE SET price = excluded.price, available = excluded.available,
             updated_at = excluded.updated_at, kind = excluded.kind, quota = excluded.quota",
    )
    .bind(sku)
    .bind(spec.price)
    .bind(spec.stock)
    .bind(now_ms())
    .bind(&spec.kind)
    .bind(spec.quota)
    .execute(db)
    .await?;
    get_sku(db, sku).await
}

pub async fn get_sku(db: &Db, sku: &str) -> Result<Sku, StoreError> {
    sqlx::query_as(
        "SELECT sku, price, available, reserved, sold, kind, quota FROM skus WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Sku, sku))
}

pub async fn create_coupon(
    db: &Db,
    user_id: &str,
    kind: &str,
    amount: i64,
) -> Result<Coupon, StoreError> {
    let coupon_id = format!("cpn_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO coupons (coupon_id, user_id, kind, amount, balance, reserved, used, created_at)
         VALUES ($1, $2, $3, $4, $4, 0, 0, $5)",
    )
    .bind(&coupon_id)
    .bind(user_id)
    .bind(kind)
    .bind(amount)
    .bind(now_ms())
    .execute(db)
    .await?;
    get_coupon(db, &coupon_id).await
}

pub async fn get_coupon(db: &Db, coupon_id: &str) -> Result<Coupon, StoreError> {
    sqlx::query_as("SELECT coupon_id, user_id, kind, amount, balance, reserved, used FROM coupons WHERE coupon_id = $1")
        .bind(coupon_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Coupon, coupon_id))
}

/// Credits a wallet or points account, creating it if needed. Refuses to pass [`MAX_BALANCE`].
pub async fn credit(
    db: &Db,
    account: crate::funds::Account,
    user_id: &str,
    amount: i64,
) -> Result<Account, StoreError> {
    if amount > MAX_BALANCE {
        return Err(too_large("the credit"));
    }
    let sql = format!(
        "INSERT INTO {t} (user_id, balance, {h}, spent, credited, updated_at) VALUES ($1, $2, 0, 0, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET balance = {t}.balance + excluded.balance,
             credited = {t}.credited + excluded.credited, updated_at = excluded.updated_at
         WHERE {t}.credited <= $4 - excluded.credited",
        t = account.table,
        h = account.held
    );
    let done = sqlx::query(&sql)
        .bind(user_id)
        .bind(amount)
        .bind(now_ms())
        .bind(MAX_BALANCE)
        .execute(db)
        .await?;
    if done.rows_affected() != 1 {
        return Err(too_large("the balance"));
    }
    get_account(db, account, user_id).await
}

pub async fn get_account(
    db: &Db,
    account: crate::funds::Account,
    user_id: &str,
) -> Result<Account, StoreError> {
    let sql = format!(
        "SELECT user_id, balance, {h} AS held, spent FROM {t} WHERE user_id = $1",
        t = account.table,
        h = account.held
    );
    sqlx::query_as(&sql)
        .bind(user_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::not_found(account.entity, user_id))
}

const ORDER_COLUMNS: &str = "order_id, user_id, status, currency, total_amount, coupon_amount, points_amount, wallet_amount,
    payable_amount, coupon_id, expires_at, cancel_reason, reject_code, reject_message, request_hash, created_at, updated_at,
    payment_method, is_first_purchase, fulfilled_at";

/// An order with its items and payments.
pub async fn get_order(db: &Db, order_id: &str) -> Result<Order, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1");
    let order: Order = sqlx::query_as(&sql)
        .bind(order_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    let mut orders = [order];
    attach_details(db, &mut orders).await?;
    let [order] = orders;
    Ok(order)
}

/// A detail row with the order it belongs to, for loading the details of many orders at once.
#[derive(sqlx::FromRow)]
struct OfOrder<T> {
    order_id: String,
    #[sqlx(flatten)]
    row: T,
}

/// Rows of `sql` (which selects `order_id` plus a `T`, with `{ids}` where the id list goes)
/// for every order in `ids`, grouped by order.
async fn details_of<T>(
    db: &Db,
    sql: &str,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<T>>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = sql.replace("{ids}", &placeholders.join(", "));
    let mut q = sqlx::query_as::<_, OfOrder<T>>(&sql);
    for id in ids {
        q = q.bind(id.clone());
    }
    let mut by_order: std::collections::HashMap<String, Vec<T>> = std::collections::HashMap::new();
    for r in q.fetch_all(db).await? {
        by_order.entry(r.order_id).or_default().push(r.row);
    }
    Ok(by_order)
}

/// Fills in the items, payments, refunds and shipment of `orders`: four queries, however
/// many orders (a page of `GET /v1/orders` is not one query per order).
async fn attach_details(db: &Db, orders: &mut [Order]) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    let mut items = details_of::<OrderItem>(
        db,
        "SELECT order_id, sku, quantity, unit_price FROM order_items WHERE order_id IN ({ids}) ORDER BY order_id, sku",
        &ids,
    )
    .await?;
    let mut payments = details_of::<Payment>(
        db,
        "SELECT order_id, payment_id, event_id, amount, currency, status, reason, received_at,
             capture_before, captured_at FROM payments
         WHERE order_id IN ({ids}) ORDER BY order_id, received_at, payment_id",
        &ids,
    )
    .await?;
    let mut refunds = details_of::<Refund>(
        db,
        "SELECT order_id, payment_id, amount, currency, status, reason, provider_refund_id, failure, created_at, updated_at,
             method
         FROM refunds WHERE order_id IN ({ids}) ORDER BY order_id, created_at, payment_id",
        &ids,
    )
    .await?;
    let mut shipments = details_of::<ShipmentStatus>(
        db,
        "SELECT order_id, status FROM shipments WHERE order_id IN ({ids})",
        &ids,
    )
    .await?;
    for order in orders {
        order.items = items.remove(&order.order_id).unwrap_or_default();
        order.payments = payments.remove(&order.order_id).unwrap_or_default();
        order.refunds = refunds.remove(&order.order_id).unwrap_or_default();
        order.shipment = shipments
            .remove(&order.order_id)
            .and_then(|s| s.into_iter().next())
            .map(|s| s.status);
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ShipmentStatus {
    status: String,
}

/// Filters of `GET /v1/orders`.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<String>,
    pub status: Option<OrderStatus>,
    /// `Some(true)`: pending orders whose deadline has passed; `Some(false)`: all others.
    pub is_expired: Option<bool>,
    /// Keyset cursor: the `(created_at, order_id)` of the last order of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: i64,
    pub now_ms: i64,
}

/// Orders newest first, one page (`limit + 1` rows are read to tell whether more exist), with
/// their details.
pub async fn list_orders(db: &Db, f: &OrderFilter) -> Result<(Vec<Order>, bool), StoreError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if f.user_id.is_some() {
        sql += &format!(" AND user_id = {}", next());
    }
    if f.status.is_some() {
        sql += &format!(" AND status = {}", next());
    }
    match f.is_expired {
        Some(true) => {
            sql += &format!(
                " AND status = 'pending_payment' AND expires_at <= {}",
                next()
            )
        }
        Some(false) => {
            sql += &format!(
                " AND NOT (status = 'pending_payment' AND expires_at <= {})",
                next()
            )
        }
        None => {}
    }
    if f.after.is_some() {
        let (a, b, c) = (next(), next(), next());
        sql += &format!(" AND (created_at < {a} OR (created_at = {b} AND order_id < {c}))");
    }
    sql += &format!(" ORDER BY created_at DESC, order_id DESC LIMIT {}", next());
    let mut q = sqlx::query_as(&sql);
    if let Some(user) = &f.user_id {
        q = q.bind(user.clone());
    }
    if let Some(status) = &f.status {
        q = q.bind(status.as_str());
    }
    if f.is_expired.is_some() {
        q = q.bind(f.now_ms);
    }
    if let Some((created, id)) = &f.after {
        q = q.bind(*created).bind(*created).bind(id.clone());
    }
    let mut rows: Vec<Order> = q.bind(f.limit + 1).fetch_all(db).await?;
    let more = rows.len() as i64 > f.limit;
    rows.truncate(f.limit as usize);
    attach_details(db, &mut rows).await?;
    Ok((rows, more))
}

pub async fn order_events(db: &Db, order_id: &str) -> Result<Vec<OrderEvent>, StoreError> {
    Ok(sqlx::query_as("SELECT step, payment_id, from_status, to_status, reason, at FROM order_events WHERE order_id = $1 ORDER BY at, step")
        .bind(order_id)
        .fetch_all(db)
        .await?)
}

/// How many unpaid orders a user has open.
pub async fn open_orders(db: &Db, user_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE user_id = $1 AND status = 'pending_payment'",
    )
    .bind(user_id)
    .fetch_one(db)
    .await?)
}

/// Order counts for metrics: `(status, cancel_reason, reject_code, was_paid, count)`.
pub async fn order_counts(db: &Db) -> Result<Vec<(String, String, String, bool, i64)>, StoreError> {
    Ok(sqlx::query(
        "SELECT status, COALESCE(cancel_reason, ''), COALESCE(reject_code, ''),
                CASE WHEN paid_at IS NULL THEN 0 ELSE 1 END, COUNT(*)
         FROM orders GROUP BY status, cancel_reason, reject_code, CASE WHEN paid_at IS NULL THEN 0 ELSE 1 END",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<i64, _>(3) == 1, r.get(4)))
    .collect())
}

/// What metrics count from the database besides orders, each grouped by its labels.
#[derive(Debug, Clone, Copy)]
pub enum Tally {
    /// Refunds by status.
    Refunds,
    /// Orders waiting for ops (`needs_attention`), by code.
    NeedsAttention,
    /// Reconciliation's actions (repaired, reported, purged).
    ReconcileActions,
    /// Payments their order could not take, by reason and decision state.
    PaymentDecisions,
    /// Events not delivered (yet), by subscriber and state (`pending`, `failed`).
    UndeliveredEvents,
    /// Disputes recorded, by what was done: `flagged_for_ops` or `entitlements_revoked`.
    Disputes,
    /// Partial refunds (an admin's, or a received return's), by kind and status.
    PartialRefunds,
}

impl Tally {
    fn sql(self) -> &'static str {
        match self {
            Tally::Refunds => "SELECT status, '', COUNT(*) FROM refunds GROUP BY status",
            Tally::PartialRefunds => {
                "SELECT kind, status, COUNT(*) FROM order_refunds GROUP BY kind, status"
            }
            Tally::NeedsAttention => {
                "SELECT code, '', COUNT(*) FROM needs_attention WHERE resolved_at IS NULL GROUP BY code"
            }
            Tally::ReconcileActions => {
                "SELECT action, '', COUNT(*) FROM reconcile_log GROUP BY action"
            }
            Tally::PaymentDecisions => {
                "SELECT reason, state, COUNT(*) FROM payment_decisions GROUP BY reason, state"
            }
            // Through the (status, next_attempt_at) index: delivered rows are never read.
            Tally::UndeliveredEvents => {
                "SELECT subscription_id, status, COUNT(*) FROM event_deliveries
                 WHERE status IN ('pending', 'failed') GROUP BY subscription_id, status"
            }
            Tally::Disputes => {
                "SELECT CASE WHEN flagged_for_ops = 1 THEN 'flagged_for_ops' ELSE 'entitlements_revoked' END,
                     '', COUNT(*) FROM disputes GROUP BY 1"
            }
        }
    }
}

/// Counts for metrics: `(first label, second label or "", count)`.
pub async fn tally(db: &Db, what: Tally) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(sqlx::query(what.sql())
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Whether the database answers.
pub async fn ping(db: &Db) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(db).await?;
    Ok(())
}
