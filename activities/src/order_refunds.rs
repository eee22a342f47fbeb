//! Partial refunds and returns of a paid order (issue 14, point 4).
//!
//! - An admin refunds part of an order: an amount of its value, or some of its lines.
//! - A customer or an admin asks to return shipped lines (`requested`); when the goods are
//!   back, an admin receives the return: the lines are restocked and refunded (`received`),
//!   and the return ends `refunded` or `refund_failed` with its refund.
//!
//! Each refund is one `order_refunds` row, written `pending` with its [`Split`] over what paid
//! the order before any money moves; the `order-refund-{refund_id}` workflow then asks the
//! provider for the payment's share with the row's own idempotency key, and [`finish`] records
//! the outcome and, on success, gives the wallet, points and coupon their shares, in one
//! transaction. A refund never gives back more than the order's total, nor any source more
//! than it paid: [`request`] checks both against every pending and succeeded refund under the
//! order row's lock. A failed refund gives back nothing and frees its part for a new request.
//!
//! This module must never call the provider, and never give anything back for a refund that
//! has not succeeded.

use crate::Db;
use crate::error::{Entity, StoreError};
use crate::holds::{Tx, expect_one};
use crate::orders::append_event_if_order;
use orderflow_workflows::model::{
    OrderLine, OrderRefundBegun, OrderRefundRef, PaymentReceived, RecordOrderRefund, RefundPayment,
};
use sqlx::Row;
use std::collections::BTreeMap;

/// What paid an order, or what is left of it to give back, or a refund's share of each: the
/// provider payment, the wallet, points and the coupon, in that order (the order that rounding
/// favours, see [`split`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Split {
    pub payment: i64,
    pub wallet: i64,
    pub points: i64,
    pub coupon: i64,
}

impl Split {
    fn parts(self) -> [i64; 4] {
        [self.payment, self.wallet, self.points, self.coupon]
    }

    fn from_parts(p: [i64; 4]) -> Self {
        Split {
            payment: p[0],
            wallet: p[1],
            points: p[2],
            coupon: p[3],
        }
    }

    pub fn total(self) -> i64 {
        self.parts().iter().sum()
    }

    pub fn minus(self, other: Split) -> Split {
        let (a, b) = (self.parts(), other.parts());
        Split::from_parts([a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]])
    }

    pub fn plus(self, other: Split) -> Split {
        let (a, b) = (self.parts(), other.parts());
        Split::from_parts([a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]])
    }
}

/// Splits a refund of `value` over `left`, what each source has left to give back, in
/// proportion (the largest-remainder rule): each source gets `floor(value * left / total)`, and
/// the units rounding leaves over go one each to the sources with the largest remainders, ties
/// to the payment first, then the wallet, points, the coupon. No source ever gets more than it
/// has left, the shares always add up to `value`, and a refund of everything left gives each
/// source exactly what it has left. `None` if `value` is not in `1..=left.total()`.
pub fn split(value: i64, left: Split) -> Option<Split> {
    let total = left.total();
    if value <= 0 || value > total || left.parts().iter().any(|p| *p < 0) {
        return None;
    }
    let parts = left.parts();
    let mut shares = [0i64; 4];
    let mut remainders = [0i128; 4];
    for i in 0..4 {
        let exact = i128::from(value) * i128::from(parts[i]);
        shares[i] = (exact / i128::from(total)) as i64;
        remainders[i] = exact % i128::from(total);
    }
    let mut leftover = value - shares.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..4).collect();
    // Stable: equal remainders keep the source order.
    order.sort_by(|a, b| remainders[*b].cmp(&remainders[*a]));
    for i in order {
        if leftover == 0 {
            break;
        }
        if remainders[i] > 0 {
            shares[i] += 1;
            leftover -= 1;
        }
    }
    debug_assert_eq!(leftover, 0);
    Some(Split::from_parts(shares))
}

/// How a refund was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundKind {
    /// An amount of the order's value.
    Amount,
    /// Some lines, at their unit prices; nothing is restocked.
    Lines,
    /// A received return's lines (restocked when it was received).
    Return,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Amount => "amount",
            RefundKind::Lines => "lines",
            RefundKind::Return => "return",
        }
    }
}

/// A refund as asked for, before it is checked and split.
#[derive(Debug, Clone)]
pub struct NewRefund {
    pub refund_id: String,
    pub order_id: String,
    /// `Some` for an amount; `None` for lines (the value is their price).
    pub amount: Option<i64>,
    pub lines: Vec<OrderLine>,
    pub reason: String,
    /// `admin` or `user:<id>`: who asked.
    pub requested_by: String,
    /// The fingerprint of the request: the same id with another request is refused.
    pub request_hash: String,
    pub at: i64,
}

/// A partial refund as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRefund {
    pub refund_id: String,
    pub order_id: String,
    pub payment_id: Option<String>,
    /// `amount`, `lines` or `return`.
    pub kind: String,
    pub return_id: Option<String>,
    pub reason: String,
    pub lines: Vec<OrderLine>,
    pub value: i64,
    pub split: Split,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub provider_refund_id: Option<String>,
    pub failure: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A return as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReturn {
    pub return_id: String,
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub reason: String,
    /// `requested`, `received`, `refunded` or `refund_failed`.
    pub status: String,
    /// The refund a received return started.
    pub refund_id: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A return as asked for.
#[derive(Debug, Clone)]
pub struct NewReturn {
    pub return_id: String,
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub reason: String,
    pub requested_by: String,
    pub request_hash: String,
    pub at: i64,
}

/// The provider idempotency key of a partial refund (also its workflow id).
pub fn refund_key(refund_id: &str) -> String {
    orderflow_workflows::order_refund_workflow_id(refund_id)
}

const REFUND_COLUMNS: &str =
    "refund_id, order_id, payment_id, kind, return_id, reason, lines, value,
     payment_amount, wallet_amount, points_amount, coupon_amount, status, provider_refund_id,
     failure, requested_by, created_at, updated_at, request_hash";

fn lines_of(order_id: &str, text: &str) -> Result<Vec<OrderLine>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::conflict(
            order_id,
            "data_error",
            format!("stored refund lines do not parse: {e}"),
        )
    })
}

fn lines_text(lines: &[OrderLine]) -> String {
    serde_json::to_string(lines).expect("lines serialize")
}

fn refund_row(r: &sqlx::any::AnyRow) -> Result<(OrderRefund, String), StoreError> {
    let order_id: String = r.get(1);
    let refund = OrderRefund {
        refund_id: r.get(0),
        payment_id: r.get(2),
        kind: r.get(3),
        return_id: r.get(4),
        reason: r.get(5),
        lines: lines_of(&order_id, &r.get::<String, _>(6))?,
        value: r.get(7),
        split: Split {
            payment: r.get(8),
            wallet: r.get(9),
            points: r.get(10),
            coupon: r.get(11),
        },
        status: r.get(12),
        provider_refund_id: r.get(13),
        failure: r.get(14),
        requested_by: r.get(15),
        created_at: r.get(16),
        updated_at: r.get(17),
        order_id,
    };
    Ok((refund, r.get(18)))
}

/// A refund by its id, and its request's fingerprint.
async fn load_refund<'c, E>(
    conn: E,
    refund_id: &str,
) -> Result<Option<(OrderRefund, String)>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = format!("SELECT {REFUND_COLUMNS} FROM order_refunds WHERE refund_id = $1");
    sqlx::query(&sql)
        .bind(refund_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(refund_row)
        .transpose()
}

/// The partial refunds `rest` selects (a `WHERE` on `$1`, the order, when `order_id` is given,
/// and an `ORDER BY`).
async fn select_refunds<'c, E>(
    conn: E,
    rest: &str,
    order_id: Option<&str>,
) -> Result<Vec<OrderRefund>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = format!("SELECT {REFUND_COLUMNS} FROM order_refunds {rest}");
    let mut query = sqlx::query(&sql);
    if let Some(order_id) = order_id {
        query = query.bind(order_id);
    }
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| refund_row(r).map(|(f, _)| f))
        .collect()
}

/// Every partial refund of an order, oldest first.
pub async fn refunds_of(db: &Db, order_id: &str) -> Result<Vec<OrderRefund>, StoreError> {
    let rest = "WHERE order_id = $1 ORDER BY created_at, refund_id";
    select_refunds(db, rest, Some(order_id)).await
}

/// Every partial refund, for the audit.
pub async fn all_refunds(db: &Db) -> Result<Vec<OrderRefund>, StoreError> {
    select_refunds(db, "ORDER BY order_id, created_at", None).await
}

const RETURN_COLUMNS: &str = "return_id, order_id, lines, reason, status, refund_id, requested_by,
     created_at, updated_at, request_hash";

fn return_row(r: &sqlx::any::AnyRow) -> Result<(OrderReturn, String), StoreError> {
    let order_id: String = r.get(1);
    let ret = OrderReturn {
        return_id: r.get(0),
        lines: lines_of(&order_id, &r.get::<String, _>(2))?,
        reason: r.get(3),
        status: r.get(4),
        refund_id: r.get(5),
        requested_by: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        order_id,
    };
    Ok((ret, r.get(9)))
}

async fn load_return(
    tx: &mut Tx<'_>,
    return_id: &str,
) -> Result<Option<(OrderReturn, String)>, StoreError> {
    let sql = format!("SELECT {RETURN_COLUMNS} FROM order_returns WHERE return_id = $1");
    sqlx::query(&sql)
        .bind(return_id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(return_row)
        .transpose()
}

/// Every return of an order, oldest first.
pub async fn returns_of(db: &Db, order_id: &str) -> Result<Vec<OrderReturn>, StoreError> {
    let sql = format!(
        "SELECT {RETURN_COLUMNS} FROM order_returns WHERE order_id = $1 ORDER BY created_at, return_id"
    );
    sqlx::query(&sql)
        .bind(order_id)
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| return_row(r).map(|(f, _)| f))
        .collect()
}

/// What an order is, for a refund or a return: read under its row's lock.
struct Paid {
    status: String,
    /// What paid it (adding up to its total).
    sources: Split,
    /// The captured payment, if anything was payable.
    payment_id: Option<String>,
    /// Whether that payment is an authorization not captured yet.
    uncaptured: bool,
    /// sku -> (quantity, unit price, restocked).
    items: BTreeMap<String, (i64, i64, i64)>,
    /// Every pending or succeeded partial refund.
    refunds: Vec<OrderRefund>,
    /// sku -> quantity in returns still `requested`.
    requested: BTreeMap<String, i64>,
}

impl Paid {
    /// What is left to give back of each source.
    fn left(&self) -> Split {
        let given = self
            .refunds
            .iter()
            .fold(Split::default(), |sum, r| sum.plus(r.split));
        self.sources.minus(given)
    }

    /// How many of `sku` a new refund of lines may still name: bought, less what refunds of
    /// lines (and returns) already name, less what waiting returns name.
    fn refundable(&self, sku: &str) -> i64 {
        let bought = self.items.get(sku).map_or(0, |i| i.0);
        let refunded: i64 = self
            .refunds
            .iter()
            .flat_map(|r| r.lines.iter())
            .filter(|l| l.sku == sku)
            .map(|l| l.quantity)
            .sum();
        bought - refunded - self.requested.get(sku).copied().unwrap_or(0)
    }

    /// The value of `lines` at the order's unit prices, after checking each may be refunded.
    fn value_of(&self, order_id: &str, lines: &[OrderLine], what: &str) -> Result<i64, StoreError> {
        let mut value: i64 = 0;
        for line in lines {
            let Some((_, price, _)) = self.items.get(&line.sku) else {
                return Err(StoreError::Invalid {
                    code: "sku_not_in_order",
                    message: format!("{} is not a line of order {order_id}", line.sku),
                });
            };
            let may = self.refundable(&line.sku);
            if line.quantity > may {
                return Err(StoreError::Invalid {
                    code: "quantity_exceeds_order",
                    message: format!(
                        "{} of {} cannot be {what}: {may} of the order's line are left (the rest is refunded or being returned)",
                        line.quantity, line.sku
                    ),
                });
            }
            value = price
                .checked_mul(line.quantity)
                .and_then(|v| v.checked_add(value))
                .ok_or_else(|| StoreError::Invalid {
                    code: "amount_too_large",
                    message: "the lines' value overflows".into(),
                })?;
        }
        Ok(value)
    }
}

/// Takes the order row's lock (the first write of the transaction, see `db`) and reads what a
/// refund or a return needs.
async fn lock_paid(tx: &mut Tx<'_>, order_id: &str) -> Result<Paid, StoreError> {
    let o = sqlx::query(
        "UPDATE orders SET updated_at = updated_at WHERE order_id = $1
         RETURNING status, payable_amount, wallet_amount, points_amount, coupon_amount",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    let payment = sqlx::query(
        "SELECT payment_id, capture_before, captured_at
         FROM payments WHERE order_id = $1 AND status = 'captured'",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?;
    let payment_id: Option<String> = payment.as_ref().map(|r| r.get(0));
    let uncaptured = payment.is_some_and(|r| {
        r.get::<Option<i64>, _>(1).is_some() && r.get::<Option<i64>, _>(2).is_none()
    });
    let items = sqlx::query(
        "SELECT sku, quantity, unit_price, restocked FROM order_items WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect();
    let rest = "WHERE order_id = $1 AND status <> 'failed'";
    let refunds = select_refunds(&mut **tx, rest, Some(order_id)).await?;
    let mut requested: BTreeMap<String, i64> = BTreeMap::new();
    for text in sqlx::query_scalar::<_, String>(
        "SELECT lines FROM order_returns WHERE order_id = $1 AND status = 'requested'",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?
    {
        for l in lines_of(order_id, &text)? {
            *requested.entry(l.sku).or_default() += l.quantity;
        }
    }
    Ok(Paid {
        status: o.get(0),
        sources: Split {
            payment: if payment_id.is_some() { o.get(1) } else { 0 },
            wallet: o.get(2),
            points: o.get(3),
            coupon: o.get(4),
        },
        payment_id,
        uncaptured,
        items,
        refunds,
        requested,
    })
}

fn refundable_status(order_id: &str, paid: &Paid) -> Result<(), StoreError> {
    match paid.status.as_str() {
        "paid" | "fulfilled" if paid.uncaptured => Err(StoreError::conflict(
            order_id,
            "payment_not_captured",
            "the payment is only authorized until the goods ship: nothing to refund yet (a cancel voids it)",
        )),
        "paid" | "fulfilled" => Ok(()),
        other => Err(StoreError::conflict(
            order_id,
            "order_not_refundable",
            format!("the order is {other}: only a paid or fulfilled order is refunded in part"),
        )),
    }
}

/// The same id asked for again: the same request gets what it got, another is refused.
fn replayed<T>(order_id: &str, found: (T, String), request_hash: &str) -> Result<T, StoreError> {
    if found.1 == request_hash {
        Ok(found.0)
    } else {
        Err(StoreError::conflict(
            order_id,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        ))
    }
}

/// Records a partial refund `pending`, split over what paid the order, and its step in the
/// order's log. Returns it, and whether this call created it (a replay of the same request
/// gets the same refund; the caller starts its workflow either way, which is idempotent).
pub async fn request(db: &Db, new: &NewRefund) -> Result<(OrderRefund, bool), StoreError> {
    let order_id = new.order_id.as_str();
    let mut tx = db.begin().await?;
    let paid = lock_paid(&mut tx, order_id).await?;
    if let Some(found) = load_refund(&mut *tx, &new.refund_id).await? {
        tx.rollback().await?;
        return Ok((replayed(order_id, found, &new.request_hash)?, false));
    }
    refundable_status(order_id, &paid)?;
    let (kind, value) = match new.amount {
        Some(amount) => (RefundKind::Amount, amount),
        None => (
            RefundKind::Lines,
            paid.value_of(order_id, &new.lines, "refunded")?,
        ),
    };
    let refund = insert_refund(&mut tx, &paid, new, kind, None, value).await?;
    tx.commit().await?;
    tracing::warn!(%order_id, refund_id = %refund.refund_id, value, reason = %new.reason, "partial refund requested");
    Ok((refund, true))
}

/// Splits `value` over what is left and writes the pending row and its step.
async fn insert_refund(
    tx: &mut Tx<'_>,
    paid: &Paid,
    new: &NewRefund,
    kind: RefundKind,
    return_id: Option<&str>,
    value: i64,
) -> Result<OrderRefund, StoreError> {
    let order_id = new.order_id.as_str();
    let left = paid.left();
    let share = split(value, left).ok_or_else(|| StoreError::Invalid {
        code: "refund_exceeds_capture",
        message: format!(
            "a refund of {value} is more than the {} of order {order_id} left to refund (of its {} total)",
            left.total(),
            paid.sources.total()
        ),
    })?;
    let refund = OrderRefund {
        refund_id: new.refund_id.clone(),
        order_id: order_id.to_owned(),
        payment_id: paid.payment_id.clone(),
        kind: kind.as_str().to_owned(),
        return_id: return_id.map(str::to_owned),
        reason: new.reason.clone(),
        lines: new.lines.clone(),
        value,
        split: share,
        status: "pending".into(),
        provider_refund_id: None,
        failure: None,
        requested_by: new.requested_by.clone(),
        created_at: new.at,
        updated_at: new.at,
    };
    sqlx::query(
        "INSERT INTO order_refunds (refund_id, order_id, payment_id, kind, return_id, reason, lines,
             value, payment_amount, wallet_amount, points_amount, coupon_amount, status,
             idempotency_key, request_hash, requested_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14, $15, $16, $16)",
    )
    .bind(&refund.refund_id)
    .bind(order_id)
    .bind(&refund.payment_id)
    .bind(&refund.kind)
    .bind(&refund.return_id)
    .bind(&refund.reason)
    .bind(lines_text(&refund.lines))
    .bind(value)
    .bind(share.payment)
    .bind(share.wallet)
    .bind(share.points)
    .bind(share.coupon)
    .bind(refund_key(&refund.refund_id))
    .bind(&new.request_hash)
    .bind(&refund.requested_by)
    .bind(new.at)
    .execute(&mut **tx)
    .await?;
    append_event_if_order(
        tx,
        order_id,
        format!("partial_refund:{}:pending", refund.refund_id),
        Some(&refund.reason),
        refund.payment_id.as_deref(),
        new.at,
    )
    .await?;
    Ok(refund)
}

/// Step 1 of `order-refund-{refund_id}`: what the row says.
pub async fn begin(db: &Db, input: &OrderRefundRef) -> Result<OrderRefundBegun, StoreError> {
    let (refund, _) = load_refund(db, &input.refund_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Refund, &input.refund_id))?;
    Ok(match refund.status.as_str() {
        "pending" if refund.split.payment == 0 => OrderRefundBegun::NoProviderShare,
        "pending" => {
            let payment_id = refund.payment_id.clone().ok_or_else(|| {
                StoreError::conflict(
                    &refund.order_id,
                    "refund_conflict",
                    format!(
                        "refund {} has a payment share but no payment",
                        refund.refund_id
                    ),
                )
            })?;
            let order = sqlx::query("SELECT user_id, currency FROM orders WHERE order_id = $1")
                .bind(&refund.order_id)
                .fetch_one(db)
                .await?;
            let (user_id, currency): (String, String) = (order.get(0), order.get(1));
            OrderRefundBegun::Call(RefundPayment {
                order_id: refund.order_id.clone(),
                user_id,
                payment: PaymentReceived {
                    payment_id,
                    event_id: String::new(),
                    amount: refund.split.payment,
                    currency,
                    capture_before_ms: None,
                },
                reason: refund.reason.clone(),
                requested_at_ms: refund.created_at,
                idempotency_key: Some(refund_key(&refund.refund_id)),
            })
        }
        status => {
            let decided = crate::payments::refund_outcome(
                status,
                refund.provider_refund_id.clone(),
                refund.failure.clone(),
            );
            OrderRefundBegun::Done(decided.ok_or_else(|| {
                StoreError::conflict(
                    &refund.order_id,
                    "data_error",
                    format!("refund {} is {status}", refund.refund_id),
                )
            })?)
        }
    })
}

/// The last step, in one transaction: the outcome on the row; on success the wallet, points
/// and coupon shares given back to their accounts and counted on the order's holds; a
/// return's status; the step in the order's log (which publishes `refund.succeeded` or
/// `refund.failed`). A retry after the commit finds the same outcome and does nothing.
pub async fn finish(db: &Db, input: &RecordOrderRefund) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    // No provider share: succeeded, with no provider refund.
    let (status, provider_refund_id, failure) = match &input.outcome {
        None => ("succeeded", None, None),
        Some(outcome) => crate::payments::refund_columns(outcome),
    };
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE order_refunds SET status = $2, provider_refund_id = $3, failure = $4, updated_at = $5
         WHERE refund_id = $1 AND order_id = $6 AND status = 'pending'",
    )
    .bind(&input.refund_id)
    .bind(status)
    .bind(provider_refund_id)
    .bind(&failure)
    .bind(input.at_ms)
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    let (refund, _) = load_refund(&mut *tx, &input.refund_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Refund, &input.refund_id))?;
    if moved.rows_affected() == 0 {
        tx.rollback().await?;
        let same =
            refund.status == status && refund.provider_refund_id.as_deref() == provider_refund_id;
        return if same {
            Ok(())
        } else {
            Err(StoreError::conflict(
                order_id,
                "refund_conflict",
                format!(
                    "refund {} is already {} ({:?})",
                    refund.refund_id, refund.status, refund.provider_refund_id
                ),
            ))
        };
    }
    if status == "succeeded" {
        give_back(&mut tx, &refund, input.at_ms).await?;
    }
    // The refund's outcome first, then what it means for its return.
    append_event_if_order(
        &mut tx,
        order_id,
        format!("partial_refund:{}:{status}", refund.refund_id),
        Some(failure.as_deref().unwrap_or(&refund.reason)),
        refund.payment_id.as_deref(),
        input.at_ms,
    )
    .await?;
    if let Some(return_id) = &refund.return_id {
        let ended = if status == "succeeded" {
            "refunded"
        } else {
            "refund_failed"
        };
        let done = sqlx::query(
            "UPDATE order_returns SET status = $2, updated_at = $3 WHERE return_id = $1 AND status = 'received'",
        )
        .bind(return_id)
        .bind(ended)
        .bind(input.at_ms)
        .execute(&mut *tx)
        .await?;
        expect_one(done.rows_affected(), order_id, "return_conflict", || {
            format!("return {return_id} is not waiting for its refund")
        })?;
        append_event_if_order(
            &mut tx,
            order_id,
            format!("return:{return_id}:{ended}"),
            Some(&refund.reason),
            refund.payment_id.as_deref(),
            input.at_ms,
        )
        .await?;
    }
    crate::faults::point("order_refund.before_commit", order_id, None);
    tx.commit().await?;
    tracing::warn!(%order_id, refund_id = %refund.refund_id, status, value = refund.value, "partial refund ended");
    Ok(())
}

/// Gives the wallet, points and coupon their shares of a succeeded refund, each counted on the
/// order's captured hold of it, never beyond what the hold captured.
async fn give_back(tx: &mut Tx<'_>, refund: &OrderRefund, at: i64) -> Result<(), StoreError> {
    let order_id = refund.order_id.as_str();
    let shares = [
        (
            "wallet",
            refund.split.wallet,
            "UPDATE wallets SET balance = balance + $2, spent = spent - $2, updated_at = $3 WHERE user_id = $1 AND spent >= $2",
        ),
        (
            "points",
            refund.split.points,
            "UPDATE points_accounts SET balance = balance + $2, spent = spent - $2, updated_at = $3 WHERE user_id = $1 AND spent >= $2",
        ),
        (
            "coupon",
            refund.split.coupon,
            "UPDATE coupons SET balance = balance + $2, used = used - $2 WHERE coupon_id = $1 AND used >= $2",
        ),
    ];
    for (resource, amount, give) in shares {
        if amount == 0 {
            continue;
        }
        let subject: Option<String> = sqlx::query_scalar(
            "SELECT subject FROM holds WHERE order_id = $1 AND resource = $2 AND state = 'captured'",
        )
        .bind(order_id)
        .bind(resource)
        .fetch_optional(&mut **tx)
        .await?;
        let subject = subject.ok_or_else(|| {
            StoreError::conflict(
                order_id,
                "not_captured",
                format!("the order's {resource} hold is not captured: nothing to give back"),
            )
        })?;
        let counted = sqlx::query(
            "UPDATE holds SET returned_amount = returned_amount + $3, updated_at = $4
             WHERE order_id = $1 AND resource = $2 AND state = 'captured' AND returned_amount + $3 <= amount",
        )
        .bind(order_id)
        .bind(resource)
        .bind(amount)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        expect_one(counted.rows_affected(), order_id, "over_returned", || {
            format!("{amount} more of the {resource} would exceed what the order captured")
        })?;
        let mut give = sqlx::query(give).bind(&subject).bind(amount);
        // Coupons keep no `updated_at`.
        if resource != "coupon" {
            give = give.bind(at);
        }
        let given = give.execute(&mut **tx).await?;
        expect_one(given.rows_affected(), order_id, "over_returned", || {
            format!("{resource} {subject} has less than {amount} spent to give back")
        })?;
    }
    Ok(())
}

/// Records a return of shipped lines, `requested`, and its step. Returns it, and whether this
/// call created it.
pub async fn request_return(db: &Db, new: &NewReturn) -> Result<(OrderReturn, bool), StoreError> {
    let order_id = new.order_id.as_str();
    let mut tx = db.begin().await?;
    let paid = lock_paid(&mut tx, order_id).await?;
    if let Some(found) = load_return(&mut tx, &new.return_id).await? {
        tx.rollback().await?;
        return Ok((replayed(order_id, found, &new.request_hash)?, false));
    }
    let shipped: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM shipments WHERE order_id = $1 AND status = 'shipped'",
    )
    .bind(order_id)
    .fetch_one(&mut *tx)
    .await?;
    if paid.status != "fulfilled" || shipped == 0 {
        return Err(StoreError::conflict(
            order_id,
            "order_not_returnable",
            format!(
                "the order is {} and {}: only shipped lines are returned",
                paid.status,
                if shipped == 0 {
                    "has shipped nothing"
                } else {
                    "shipped"
                }
            ),
        ));
    }
    for line in &new.lines {
        let back = paid.items.get(&line.sku).map_or(0, |i| i.0 - i.2);
        if line.quantity > back {
            return Err(StoreError::Invalid {
                code: "quantity_exceeds_order",
                message: format!(
                    "{} of {} cannot be returned: {back} of the line are still out",
                    line.quantity, line.sku
                ),
            });
        }
    }
    paid.value_of(order_id, &new.lines, "returned")?;
    sqlx::query(
        "INSERT INTO order_returns (return_id, order_id, lines, reason, status, request_hash,
             requested_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'requested', $5, $6, $7, $7)",
    )
    .bind(&new.return_id)
    .bind(order_id)
    .bind(lines_text(&new.lines))
    .bind(&new.reason)
    .bind(&new.request_hash)
    .bind(&new.requested_by)
    .bind(new.at)
    .execute(&mut *tx)
    .await?;
    append_event_if_order(
        &mut tx,
        order_id,
        format!("return:{}:requested", new.return_id),
        Some(&new.reason),
        None,
        new.at,
    )
    .await?;
    let (ret, _) = load_return(&mut tx, &new.return_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Return, &new.return_id))?;
    tx.commit().await?;
    tracing::info!(%order_id, return_id = %new.return_id, "return requested");
    Ok((ret, true))
}

/// The goods of a return are back: in one transaction its lines are restocked, its refund
/// recorded `pending` (the lines' value, split like any refund, capped at what is left to give
/// back) and it becomes `received`. Returns the return and its refund (`None` when nothing
/// was left to refund: the return is then `refunded` at once). Receiving it again answers the
/// same.
pub async fn receive_return(
    db: &Db,
    return_id: &str,
    refund_id: &str,
    at: i64,
) -> Result<(OrderReturn, Option<OrderRefund>), StoreError> {
    let order_id: String =
        sqlx::query_scalar("SELECT order_id FROM order_returns WHERE return_id = $1")
            .bind(return_id)
            .fetch_optional(db)
            .await?
            .ok_or_else(|| StoreError::not_found(Entity::Return, return_id))?;
    let mut tx = db.begin().await?;
    let mut paid = lock_paid(&mut tx, &order_id).await?;
    let (ret, _) = load_return(&mut tx, return_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Return, return_id))?;
    if ret.status != "requested" {
        let refund = match &ret.refund_id {
            Some(id) => load_refund(&mut *tx, id).await?.map(|(f, _)| f),
            None => None,
        };
        tx.rollback().await?;
        return Ok((ret, refund));
    }
    for line in &ret.lines {
        restock(&mut tx, &order_id, line, at).await?;
    }
    // This return's lines no longer wait: its refund names them instead.
    for line in &ret.lines {
        if let Some(q) = paid.requested.get_mut(&line.sku) {
            *q -= line.quantity;
        }
    }
    let value = paid.value_of(&order_id, &ret.lines, "refunded")?;
    let value = value.min(paid.left().total());
    let refund = if value > 0 {
        let new = NewRefund {
            refund_id: refund_id.to_owned(),
            order_id: order_id.clone(),
            amount: None,
            lines: ret.lines.clone(),
            // The return's own reason; `return_id` ties the refund to it.
            reason: ret.reason.clone(),
            requested_by: ret.requested_by.clone(),
            request_hash: format!("return:{return_id}"),
            at,
        };
        Some(
            insert_refund(
                &mut tx,
                &paid,
                &new,
                RefundKind::Return,
                Some(return_id),
                value,
            )
            .await?,
        )
    } else {
        None
    };
    let status = if refund.is_some() {
        "received"
    } else {
        "refunded"
    };
    let done = sqlx::query(
        "UPDATE order_returns SET status = $2, refund_id = $3, updated_at = $4
         WHERE return_id = $1 AND status = 'requested'",
    )
    .bind(return_id)
    .bind(status)
    .bind(refund.as_ref().map(|f| f.refund_id.as_str()))
    .bind(at)
    .execute(&mut *tx)
    .await?;
    expect_one(done.rows_affected(), &order_id, "return_conflict", || {
        format!("return {return_id} changed while it was received")
    })?;
    append_event_if_order(
        &mut tx,
        &order_id,
        format!("return:{return_id}:received"),
        Some(&ret.reason),
        None,
        at,
    )
    .await?;
    let (ret, _) = load_return(&mut tx, return_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Return, return_id))?;
    tx.commit().await?;
    tracing::warn!(%order_id, %return_id, refund = ?refund.as_ref().map(|f| (&f.refund_id, f.value)), "return received and restocked");
    Ok((ret, refund))
}

/// Puts a returned line back on sale, counted on its order line.
async fn restock(
    tx: &mut Tx<'_>,
    order_id: &str,
    line: &OrderLine,
    at: i64,
) -> Result<(), StoreError> {
    let counted = sqlx::query(
        "UPDATE order_items SET restocked = restocked + $3
         WHERE order_id = $1 AND sku = $2 AND restocked + $3 <= quantity",
    )
    .bind(order_id)
    .bind(&line.sku)
    .bind(line.quantity)
    .execute(&mut **tx)
    .await?;
    expect_one(counted.rows_affected(), order_id, "over_returned", || {
        format!(
            "{} of {} would be more than the order bought",
            line.quantity, line.sku
        )
    })?;
    let back = sqlx::query(
        "UPDATE skus SET available = available + $2, sold = sold - $2, updated_at = $3 WHERE sku = $1 AND sold >= $2",
    )
    .bind(&line.sku)
    .bind(line.quantity)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    expect_one(back.rows_affected(), order_id, "over_returned", || {
        format!(
            "{} has fewer than {} sold to take back",
            line.sku, line.quantity
        )
    })
}

/// How many partial refunds of an order are pending or succeeded. Such an order is not
/// cancelled whole (its cancel would give back again what they gave), and a dispute of its
/// payment goes to ops.
pub async fn partial_refunds_of<'c, E>(conn: E, order_id: &str) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM order_refunds WHERE order_id = $1 AND status <> 'failed'",
    )
    .bind(order_id)
    .fetch_one(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(payment: i64, wallet: i64, points: i64, coupon: i64) -> Split {
        Split {
            payment,
            wallet,
            points,
            coupon,
        }
    }

    #[test]
    fn split_is_proportional_and_adds_up() {
        // 10,000 paid as 6,000 + 2,000 + 1,000 + 1,000: a 2,500 refund is a quarter of each.
        assert_eq!(
            split(2_500, s(6_000, 2_000, 1_000, 1_000)),
            Some(s(1_500, 500, 250, 250))
        );
        // Rounding leftovers go to the largest remainders, ties to the payment first.
        assert_eq!(split(1, s(1, 1, 1, 0)), Some(s(1, 0, 0, 0)));
        assert_eq!(split(2, s(1, 1, 1, 0)), Some(s(1, 1, 0, 0)));
        assert_eq!(split(5, s(3, 0, 0, 7)), Some(s(2, 0, 0, 3)));
        assert_eq!(split(3, s(1, 0, 0, 9)), Some(s(0, 0, 0, 3)));
        // Everything left gives each source exactly what it has left.
        assert_eq!(split(11, s(5, 3, 2, 1)), Some(s(5, 3, 2, 1)));
        // Nothing beyond what is left, nothing negative.
        assert_eq!(split(12, s(5, 3, 2, 1)), None);
        assert_eq!(split(0, s(5, 3, 2, 1)), None);
        assert_eq!(split(-1, s(5, 3, 2, 1)), None);
    }

    #[test]
    fn split_never_gives_a_source_more_than_it_has_left() {
        for total_parts in [
            [7, 0, 0, 0],
            [1, 1, 1, 1],
            [3, 5, 0, 2],
            [0, 9, 1, 0],
            [99, 1, 1, 1],
        ] {
            let left = Split::from_parts(total_parts);
            for value in 1..=left.total() {
                let got = split(value, left).unwrap();
                assert_eq!(got.total(), value);
                for (g, l) in got.parts().iter().zip(left.parts()) {
                    assert!(*g >= 0 && *g <= l, "{value} of {left:?} gave {got:?}");
                }
                // Refunding the rest afterwards always fits exactly.
                let rest = left.minus(got);
                if rest.total() > 0 {
                    assert_eq!(split(rest.total(), rest), Some(rest));
                }
            }
        }
    }
}
