//! The order row, its operation log and its payments.
//!
//! Status changes are conditional updates (`WHERE status = 'pending_payment'`): if one matches
//! no row, the function either finds proof that it already happened (a retry) or fails with a
//! typed error. Each change writes its `order_events` row in the same transaction.

use crate::Db;
use crate::error::{Entity, StoreError};
use crate::holds::{Tx, expect_one};
use orderflow_workflows::model::{
    Amounts, LoadedOrder, MarkCancelled, MarkPaid, OrderStatus, PaymentReceived, RecordOrder,
    Resource,
};
use sqlx::Row;

/// One row of the operation log. `key` makes the insert idempotent: a retried activity writes
/// the same step again, and the second insert does nothing.
pub(crate) struct Step<'a> {
    pub key: String,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub reason: Option<&'a str>,
    pub payment_id: Option<&'a str>,
}

impl<'a> Step<'a> {
    /// A status change: `status:<to>`.
    pub fn status(from: Option<&'a str>, to: &'a str, reason: Option<&'a str>) -> Self {
        Step {
            key: format!("status:{to}"),
            from,
            to,
            reason,
            payment_id: None,
        }
    }

    /// A payment or refund step that leaves the status as it is.
    pub fn within(status: &'a str, key: String, reason: Option<&'a str>) -> Self {
        Step {
            key,
            from: Some(status),
            to: status,
            reason,
            payment_id: None,
        }
    }

    pub fn payment(mut self, payment_id: &'a str) -> Self {
        self.payment_id = Some(payment_id);
        self
    }
}

pub(crate) async fn append_event(
    tx: &mut Tx<'_>,
    order_id: &str,
    step: Step<'_>,
    at: i64,
) -> Result<(), StoreError> {
    let written = sqlx::query(
        "INSERT INTO order_events (order_id, step, from_status, to_status, reason, payment_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id, step) DO NOTHING",
    )
    .bind(order_id)
    .bind(&step.key)
    .bind(step.from)
    .bind(step.to)
    .bind(step.reason)
    .bind(step.payment_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    // A new step publishes its events (if any) to other services, in this transaction; a
    // retried one already did.
    if written.rows_affected() == 1 {
        crate::events_out::publish(tx, order_id, &step, at).await?;
    }
    Ok(())
}

pub(crate) async fn status_of(
    tx: &mut Tx<'_>,
    order_id: &str,
) -> Result<Option<OrderStatus>, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(status.map(OrderStatus::try_from).transpose()?)
}

/// Creates the order row once its reservations are decided. A retry finds the row and checks it
/// is the same request.
pub async fn record(db: &Db, input: &RecordOrder) -> Result<(), StoreError> {
    let o = &input.order;
    let a = &input.amounts;
    let (code, message) = match &input.rejection {
        Some(r) => (Some(r.code.as_str()), Some(r.message.as_str())),
        None => (None, None),
    };
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, user_id, status, currency, total_amount, coupon_amount, points_amount,
             wallet_amount, payable_amount, coupon_id, expires_at, reject_code, reject_message, idempotency_key,
             request_hash, created_at, updated_at, payment_method)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&o.order_id)
    .bind(&o.user_id)
    .bind(input.status.as_str())
    .bind(&o.currency)
    .bind(a.total)
    .bind(a.coupon)
    .bind(a.points)
    .bind(a.wallet)
    .bind(a.payable)
    .bind(o.coupon_id.as_deref())
    .bind(input.expires_at_ms)
    .bind(code)
    .bind(message)
    .bind(&o.idempotency_key)
    .bind(&o.request_hash)
    .bind(input.at_ms)
    .bind(o.payment_method.as_str())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        let row = sqlx::query("SELECT request_hash FROM orders WHERE order_id = $1")
            .bind(&o.order_id)
            .fetch_one(&mut *tx)
            .await?;
        let hash: String = row.get(0);
        if hash != o.request_hash {
            return Err(StoreError::conflict(
                &o.order_id,
                "order_exists",
                "another request already created this order",
            ));
        }
    }
    append_event(
        &mut tx,
        &o.order_id,
        Step::status(None, input.status.as_str(), code),
        input.at_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `mark_paid` inside the caller's transaction.
pub(crate) async fn mark_paid_in(tx: &mut Tx<'_>, input: &MarkPaid) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let moved = sqlx::query(
        "UPDATE orders SET status = 'paid', expires_at = NULL, paid_at = $2, updated_at = $2
         WHERE order_id = $1 AND status = 'pending_payment'",
    )
    .bind(order_id)
    .bind(input.at_ms)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() == 0 {
        let status = status_of(tx, order_id).await?;
        if status != Some(OrderStatus::Paid) {
            return Err(StoreError::conflict(
                order_id,
                "invalid_transition",
                format!(
                    "cannot mark paid: the order is {}",
                    status.map_or("missing", OrderStatus::as_str)
                ),
            ));
        }
        // A retry: the payment must already be the one recorded.
        if let Some(p) = &input.payment {
            ensure_payment(tx, order_id, p, "captured").await?;
        }
        return Ok(());
    }
    let reason = if input.payment.is_some() {
        "payment"
    } else {
        "nothing_payable"
    };
    let mut step = Step::status(Some("pending_payment"), "paid", Some(reason));
    if let Some(p) = &input.payment {
        step = step.payment(&p.payment_id);
    }
    append_event(tx, order_id, step, input.at_ms).await?;
    if let Some(p) = &input.payment {
        let inserted = insert_payment(tx, order_id, p, "captured", None, input.at_ms).await?;
        expect_one(inserted, order_id, "payment_conflict", || {
            format!("payment {} is already recorded", p.payment_id)
        })?;
    }
    // The user's first paid order: the key of `first_purchases` decides between concurrent ones.
    let first = sqlx::query(
        "INSERT INTO first_purchases (user_id, order_id, at)
         SELECT user_id, order_id, $2 FROM orders WHERE order_id = $1
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(input.at_ms)
    .execute(&mut **tx)
    .await?;
    if first.rows_affected() == 1 {
        sqlx::query("UPDATE orders SET is_first_purchase = 1 WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `mark_cancelled` inside the caller's transaction.
pub(crate) async fn mark_cancelled_in(
    tx: &mut Tx<'_>,
    input: &MarkCancelled,
) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let moved = sqlx::query(
        "UPDATE orders SET status = 'cancelled', cancel_reason = $2, cancelled_at = $3, updated_at = $3
         WHERE order_id = $1 AND status = 'pending_payment'",
    )
    .bind(order_id)
    .bind(input.reason.as_str())
    .bind(input.at_ms)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() == 0 {
        let status = status_of(tx, order_id).await?;
        return match status {
            Some(OrderStatus::Cancelled) => Ok(()),
            other => Err(StoreError::conflict(
                order_id,
                "invalid_transition",
                format!(
                    "cannot cancel: the order is {}",
                    other.map_or("missing", OrderStatus::as_str)
                ),
            )),
        };
    }
    append_event(
        tx,
        order_id,
        Step::status(
            Some("pending_payment"),
            "cancelled",
            Some(input.reason.as_str()),
        ),
        input.at_ms,
    )
    .await?;
    Ok(())
}

/// Records `p` as `unapplied` (owed back) for `order_id`, with its log step; a retry finds it
/// recorded the same way. A payment recorded otherwise (captured, another order) is a conflict.
pub(crate) async fn owe_back(
    tx: &mut Tx<'_>,
    order_id: &str,
    p: &PaymentReceived,
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    let inserted = insert_payment(tx, order_id, p, "unapplied", Some(reason), at).await?;
    if inserted == 0 {
        return ensure_payment(tx, order_id, p, "unapplied").await;
    }
    let step = format!("payment:{}:unapplied", p.payment_id);
    append_event_if_order(tx, order_id, step, Some(reason), Some(&p.payment_id), at).await
}

/// Appends a payment or refund step to the order's log, if the order exists: a payment for an
/// order we do not know is recorded under the id it named, with no log to write to.
pub(crate) async fn append_event_if_order(
    tx: &mut Tx<'_>,
    order_id: &str,
    key: String,
    reason: Option<&str>,
    payment_id: Option<&str>,
    at: i64,
) -> Result<(), StoreError> {
    let Some(status) = status_of(tx, order_id).await? else {
        return Ok(());
    };
    let mut step = Step::within(status.as_str(), key, reason);
    step.payment_id = payment_id;
    append_event(tx, order_id, step, at).await
}

pub(crate) async fn insert_payment(
    tx: &mut Tx<'_>,
    order_id: &str,
    p: &PaymentReceived,
    status: &str,
    reason: Option<&str>,
    at: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO payments (payment_id, order_id, event_id, amount, currency, status, reason, received_at, capture_before)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(&p.payment_id)
    .bind(order_id)
    .bind(&p.event_id)
    .bind(p.amount)
    .bind(&p.currency)
    .bind(status)
    .bind(reason)
    .bind(at)
    .bind(p.capture_before_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Proves that a retried payment write already happened, with the same order and status.
pub(crate) async fn ensure_payment(
    tx: &mut Tx<'_>,
    order_id: &str,
    p: &PaymentReceived,
    status: &str,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT order_id, status FROM payments WHERE payment_id = $1")
        .bind(&p.payment_id)
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        Some(r) if r.get::<String, _>(0) == order_id && r.get::<String, _>(1) == status => Ok(()),
        Some(_) => Err(StoreError::conflict(
            order_id,
            "payment_conflict",
            format!(
                "payment {} is recorded for another order or with another status",
                p.payment_id
            ),
        )),
        None => Err(StoreError::conflict(
            order_id,
            "payment_missing",
            format!("payment {} was not recorded", p.payment_id),
        )),
    }
}

/// The stored status of an order, if it exists.
pub async fn status(db: &Db, order_id: &str) -> Result<Option<OrderStatus>, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?;
    Ok(status.map(OrderStatus::try_from).transpose()?)
}

/// Reads an order back for a resumed workflow (see `OrderWorkflow`'s resume): its status,
/// amounts and deadline, the resources it holds, the payment that paid it, and the payments
/// for it that were reported while no workflow ran (held decisions and unprocessed inbox
/// events of exactly its amount and currency).
pub async fn load(db: &Db, order_id: &str) -> Result<LoadedOrder, StoreError> {
    let row = sqlx::query(
        "SELECT status, total_amount, coupon_amount, points_amount, wallet_amount, payable_amount, expires_at, currency
         FROM orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    let status = OrderStatus::parse(&row.get::<String, _>(0)).ok_or_else(|| {
        StoreError::conflict(order_id, "invalid_status", "the order's status is unknown")
    })?;
    let amounts = Amounts {
        total: row.get(1),
        coupon: row.get(2),
        points: row.get(3),
        wallet: row.get(4),
        payable: row.get(5),
    };
    let currency: String = row.get(7);
    let held_rows: Vec<String> =
        sqlx::query_scalar("SELECT resource FROM holds WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(db)
            .await?;
    let mut held: Vec<Resource> = held_rows
        .iter()
        .filter_map(|h| Resource::parse(h))
        .collect();
    held.sort();
    let payment = |r: &sqlx::any::AnyRow| PaymentReceived {
        payment_id: r.get(0),
        event_id: r.get(1),
        amount: r.get(2),
        currency: r.get(3),
        capture_before_ms: r.get(4),
    };
    // An authorization is carried as one until it is captured.
    let applied = sqlx::query(
        "SELECT payment_id, event_id, amount, currency,
             CASE WHEN captured_at IS NULL THEN capture_before END
         FROM payments WHERE order_id = $1 AND status = 'captured'",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(payment);
    let waiting = format!(
        "SELECT payment_id, event_id, amount, currency, CAST(NULL AS BIGINT) FROM payment_decisions
         WHERE order_id = $1 AND state = 'holding' AND amount = $2 AND currency = $3
         UNION
         SELECT payment_id, event_id, amount, currency, capture_before FROM webhook_inbox
         WHERE order_id = $1 AND processed_at IS NULL AND amount = $2 AND currency = $3
             AND event_type IN {}
         ORDER BY 1",
        crate::payments::PAYMENT_EVENTS_SQL
    );
    let waiting = sqlx::query(&waiting)
        .bind(order_id)
        .bind(amounts.payable)
        .bind(&currency)
        .fetch_all(db)
        .await?
        .iter()
        .map(payment)
        .collect();
    Ok(LoadedOrder {
        status,
        amounts,
        expires_at_ms: row.get(6),
        held,
        applied,
        waiting,
    })
}
