//! Checkout sessions, the webhook inbox and refunds: the money path's own tables.
//!
//! Same rules as every store module: one transaction per call, idempotent on a business key
//! (session id, event id, payment id), `rows_affected` checked, and a retry either finds proof
//! that the write already happened or fails with a typed error. Nothing here calls the
//! provider; the activities do, between these writes.

use crate::Db;
use crate::error::StoreError;
use crate::holds::expect_one;
use crate::orders::{Step, append_event, owe_back, status_of};
use orderflow_workflows::model::{
    RecordCheckout, RecordRefundResult, RefundOutcome, RefundPayment,
};
use sqlx::Row;

/// Stores an opened checkout session and moves the order's `expires_at` out to the session's
/// deadline. If the order is no longer pending (paid or cancelled meanwhile), the session is
/// still recorded and the row's deadline is left alone: it no longer applies.
pub async fn record_checkout(db: &Db, input: &RecordCheckout) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let s = &input.session;
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO checkout_sessions (session_id, order_id, amount, currency, pay_url, started_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(&s.session_id)
    .bind(order_id)
    .bind(s.amount)
    .bind(&s.currency)
    .bind(&s.pay_url)
    .bind(s.started_ms)
    .bind(s.expires_at_ms)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        let row = sqlx::query("SELECT order_id FROM checkout_sessions WHERE session_id = $1")
            .bind(&s.session_id)
            .fetch_one(&mut *tx)
            .await?;
        if row.get::<String, _>(0) != order_id {
            return Err(StoreError::conflict(
                order_id,
                "session_conflict",
                format!("checkout session {} belongs to another order", s.session_id),
            ));
        }
    }
    sqlx::query(
        "UPDATE orders SET expires_at = $2, updated_at = $3
         WHERE order_id = $1 AND status = 'pending_payment' AND expires_at < $2",
    )
    .bind(order_id)
    .bind(s.expires_at_ms)
    .bind(s.started_ms)
    .execute(&mut *tx)
    .await?;
    let status = status_of(&mut tx, order_id)
        .await?
        .ok_or_else(|| StoreError::not_found("order", order_id))?;
    let step = Step::within(
        &status,
        format!("checkout:{}", s.session_id),
        Some("checkout_opened"),
    );
    append_event(&mut tx, order_id, step, s.started_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Refund step 1: the payment is recorded as owed back, and a `pending` refund of all of it is
/// recorded, in one transaction, before the provider is called. A retry finds both rows.
pub async fn record_refund_pending(db: &Db, input: &RefundPayment) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let p = &input.payment;
    let at = input.requested_at_ms;
    let mut tx = db.begin().await?;
    owe_back(&mut tx, order_id, p, &input.reason, at).await?;
    let inserted = sqlx::query(
        "INSERT INTO refunds (payment_id, order_id, amount, currency, status, reason, idempotency_key, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(&p.payment_id)
    .bind(order_id)
    .bind(p.amount)
    .bind(&p.currency)
    .bind(&input.reason)
    .bind(input.idempotency_key())
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        let status = status_of(&mut tx, order_id)
            .await?
            .ok_or_else(|| StoreError::not_found("order", order_id))?;
        let step = Step::within(
            &status,
            format!("refund:{}:pending", p.payment_id),
            Some(&input.reason),
        )
        .payment(&p.payment_id);
        append_event(&mut tx, order_id, step, at).await?;
    } else {
        let row = sqlx::query("SELECT order_id, amount FROM refunds WHERE payment_id = $1")
            .bind(&p.payment_id)
            .fetch_one(&mut *tx)
            .await?;
        if row.get::<String, _>(0) != order_id || row.get::<i64, _>(1) != p.amount {
            return Err(StoreError::conflict(
                order_id,
                "refund_conflict",
                format!(
                    "a different refund of payment {} is already recorded",
                    p.payment_id
                ),
            ));
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Refund step 3: `pending -> succeeded | failed`. A retry that finds the same outcome is a
/// no-op; any other state is a conflict, never an `Ok`.
pub async fn record_refund_result(db: &Db, input: &RecordRefundResult) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let (status, refund_id, failure) = match &input.outcome {
        RefundOutcome::Succeeded { provider_refund_id } => {
            ("succeeded", Some(provider_refund_id.as_str()), None)
        }
        RefundOutcome::Failed { code, message } => {
            ("failed", None, Some(format!("{code}: {message}")))
        }
    };
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE refunds SET status = $2, provider_refund_id = $3, failure = $4, updated_at = $5
         WHERE payment_id = $1 AND order_id = $6 AND status = 'pending'",
    )
    .bind(&input.payment_id)
    .bind(status)
    .bind(refund_id)
    .bind(failure.as_deref())
    .bind(input.at_ms)
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        let row = sqlx::query(
            "SELECT status, provider_refund_id FROM refunds WHERE payment_id = $1 AND order_id = $2",
        )
        .bind(&input.payment_id)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        return match row {
            Some(r)
                if r.get::<String, _>(0) == status
                    && r.get::<Option<String>, _>(1).as_deref() == refund_id =>
            {
                Ok(())
            }
            Some(r) => Err(StoreError::conflict(
                order_id,
                "refund_conflict",
                format!(
                    "the refund of payment {} is already {}",
                    input.payment_id,
                    r.get::<String, _>(0)
                ),
            )),
            None => Err(StoreError::conflict(
                order_id,
                "refund_missing",
                format!("no refund of payment {} is recorded", input.payment_id),
            )),
        };
    }
    expect_one(moved.rows_affected(), order_id, "refund_conflict", || {
        format!("more than one refund row for payment {}", input.payment_id)
    })?;
    let order_status = status_of(&mut tx, order_id)
        .await?
        .ok_or_else(|| StoreError::not_found("order", order_id))?;
    let step = Step::within(
        &order_status,
        format!("refund:{}:{status}", input.payment_id),
        failure.as_deref(),
    )
    .payment(&input.payment_id);
    append_event(&mut tx, order_id, step, input.at_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// A verified webhook event, as the inbox stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub received_at: i64,
}

/// What the inbox knew about an event when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbox {
    /// First delivery: process it.
    New,
    /// Seen before but never processed (a crash or an outage in between): process it again.
    Unprocessed,
    /// Seen and processed: a redelivery, answered without doing anything.
    Processed { outcome: String },
}

/// Inserts the event if its id is new (insert-or-ignore) and says what to do with it.
pub async fn receive(db: &Db, e: &InboxEvent) -> Result<Inbox, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_inbox (event_id, event_type, order_id, payment_id, amount, currency, outcome, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'received', $7) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&e.event_id)
    .bind(&e.event_type)
    .bind(&e.order_id)
    .bind(&e.payment_id)
    .bind(e.amount)
    .bind(&e.currency)
    .bind(e.received_at)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Inbox::New);
    }
    let row = sqlx::query("SELECT outcome, processed_at FROM webhook_inbox WHERE event_id = $1")
        .bind(&e.event_id)
        .fetch_one(db)
        .await?;
    Ok(match row.get::<Option<i64>, _>(1) {
        Some(_) => Inbox::Processed {
            outcome: row.get(0),
        },
        None => Inbox::Unprocessed,
    })
}

/// Marks an event processed with its outcome (`signalled`, `refund_started`, `amount_mismatch`,
/// `unknown_order`, `ignored`, ...).
pub async fn processed(db: &Db, event_id: &str, outcome: &str, at: i64) -> Result<(), StoreError> {
    let done =
        sqlx::query("UPDATE webhook_inbox SET outcome = $2, processed_at = $3 WHERE event_id = $1")
            .bind(event_id)
            .bind(outcome)
            .bind(at)
            .execute(db)
            .await?;
    expect_one(done.rows_affected(), event_id, "inbox_missing", || {
        format!("webhook event {event_id} is not in the inbox")
    })
}

/// Where a payment is recorded: `(order_id, status)`, if anywhere.
pub async fn payment_status(
    db: &Db,
    payment_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query("SELECT order_id, status FROM payments WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
