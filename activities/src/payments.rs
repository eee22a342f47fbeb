//! Checkout sessions, the webhook inbox and refunds: the money path's own tables.
//!
//! Same rules as every store module: one transaction per call, idempotent on a business key
//! (session id, event id, payment id), `rows_affected` checked, and a retry either finds proof
//! that the write already happened or fails with a typed error. Nothing here calls the
//! provider; the activities do, between these writes.

use crate::Db;
use crate::error::{Entity, StoreError};
use crate::holds::expect_one;
use crate::orders::{Step, append_event, append_event_if_order, owe_back, status_of};
use orderflow_workflows::model::{
    CaptureAuthorization, PaymentReceived, RecordCheckout, RecordRefundResult, RefundBegun,
    RefundOutcome, RefundPayment, first_refund_key,
};
use sqlx::Row;

/// The order's checkout sessions not yet closed, oldest first.
pub async fn open_sessions(db: &Db, order_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT session_id FROM checkout_sessions WHERE order_id = $1 AND closed_at IS NULL
         ORDER BY started_at, session_id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await?)
}

/// Who ended a checkout session: the order's own cancel, or the provider (its deadline, or an
/// expiry asked for at the provider), which reports it by `checkout.session.expired`. It is the
/// reason of the step in the order's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEndedBy {
    Order,
    Provider,
}

impl SessionEndedBy {
    fn reason(self) -> &'static str {
        match self {
            SessionEndedBy::Order => "order_closed",
            SessionEndedBy::Provider => "provider_expired",
        }
    }
}

/// Records that a session ended (`expired`, or `paid` before it could), with its step in the
/// order's log (`checkout:<session>:expired`). A retry finds it closed and writes nothing.
/// Answers whether the session is the order's (closed now or before), `false` if no session
/// of that id belongs to the order.
pub async fn close_session(
    db: &Db,
    order_id: &str,
    session_id: &str,
    closed_as: &str,
    by: SessionEndedBy,
    at: i64,
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    let closed = sqlx::query(
        "UPDATE checkout_sessions SET closed_at = $3, closed_as = $4
         WHERE session_id = $1 AND order_id = $2 AND closed_at IS NULL",
    )
    .bind(session_id)
    .bind(order_id)
    .bind(at)
    .bind(closed_as)
    .execute(&mut *tx)
    .await?;
    let known = if closed.rows_affected() == 1 {
        let step = format!("checkout:{session_id}:{closed_as}");
        append_event_if_order(&mut tx, order_id, step, Some(by.reason()), None, at).await?;
        true
    } else {
        sqlx::query("SELECT 1 FROM checkout_sessions WHERE session_id = $1 AND order_id = $2")
            .bind(session_id)
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
    };
    tx.commit().await?;
    Ok(known)
}

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
        .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    let step = Step::within(
        status.as_str(),
        format!("checkout:{}", s.session_id),
        Some("checkout_opened"),
    );
    append_event(&mut tx, order_id, step, s.started_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Refund step 1, on our own record: if the payment paid its order, there is nothing to refund;
/// otherwise it is recorded as owed back with a `pending` refund row (unless one exists), and
/// the answer is what that row says: call the provider with the attempt's key, or the outcome
/// it already has. `owner` is the workflow running this attempt.
pub async fn begin_refund(
    db: &Db,
    input: &RefundPayment,
    owner: Option<&str>,
) -> Result<RefundBegun, StoreError> {
    let order_id = input.order_id.as_str();
    let p = &input.payment;
    let at = input.requested_at_ms;
    let mut tx = db.begin().await?;
    // The write first (SQLite's lock), then the reads: the row and the payment are stable.
    let inserted = sqlx::query(
        "INSERT INTO refunds (payment_id, order_id, amount, currency, status, reason, idempotency_key, created_at, updated_at, owner)
         SELECT $1, $2, $3, $4, 'pending', $5, $6, $7, $7, $8
         WHERE NOT EXISTS (SELECT 1 FROM payments WHERE payment_id = $1 AND status = 'captured')
         ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(&p.payment_id)
    .bind(order_id)
    .bind(p.amount)
    .bind(&p.currency)
    .bind(&input.reason)
    .bind(first_refund_key(&p.payment_id))
    .bind(at)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        owe_back(&mut tx, order_id, p, &input.reason, at).await?;
        let step = format!("refund:{}:pending", p.payment_id);
        append_event_if_order(
            &mut tx,
            order_id,
            step,
            Some(&input.reason),
            Some(&p.payment_id),
            at,
        )
        .await?;
        tx.commit().await?;
        return Ok(RefundBegun::Call {
            idempotency_key: first_refund_key(&p.payment_id),
        });
    }
    let row = sqlx::query(
        "SELECT order_id, amount, status, idempotency_key, provider_refund_id, failure FROM refunds WHERE payment_id = $1",
    )
    .bind(&p.payment_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // No refund row, and none was written: the payment is captured (it paid an order).
        tx.commit().await?;
        return Ok(RefundBegun::Applied);
    };
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
    let status: String = row.get(2);
    let begun = match refund_outcome(&status, row.get(4), row.get(5)) {
        Some(outcome) => RefundBegun::Done(outcome),
        None => {
            if let Some(owner) = owner {
                sqlx::query(
                    "UPDATE refunds SET owner = $2 WHERE payment_id = $1 AND status = 'pending'",
                )
                .bind(&p.payment_id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            RefundBegun::Call {
                idempotency_key: row.get(3),
            }
        }
    };
    tx.commit().await?;
    Ok(begun)
}

/// Makes a `failed` refund `pending` again as a new attempt, with a key derived from the
/// attempt number (the provider refused the old key's request for good). Only a failed refund
/// can be retried: the provider refunded nothing for it, so the sum refunded never exceeds the
/// capture. A payment made offline cannot be refunded through the provider. Returns the refund
/// to run and its attempt number.
pub async fn retry_refund(
    db: &Db,
    payment_id: &str,
    at: i64,
) -> Result<(RefundPayment, i64), StoreError> {
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE refunds SET status = 'pending', attempt = attempt + 1, failure = NULL, updated_at = $2,
             idempotency_key = 'refund-' || payment_id || '-' || CAST(attempt + 1 AS TEXT), owner = NULL
         WHERE payment_id = $1 AND status = 'failed' AND payment_id NOT LIKE 'offline-%'",
    )
    .bind(payment_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT r.order_id, r.status, r.attempt, r.reason, r.idempotency_key, p.event_id, p.amount, p.currency,
                COALESCE(o.user_id, '')
         FROM refunds r JOIN payments p ON p.payment_id = r.payment_id
         LEFT JOIN orders o ON o.order_id = r.order_id WHERE r.payment_id = $1",
    )
    .bind(payment_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Refund, payment_id))?;
    let order_id: String = row.get(0);
    let status: String = row.get(1);
    if moved.rows_affected() == 0 {
        let (code, why) = match status.as_str() {
            "succeeded" => ("refund_already_succeeded", "it succeeded".to_owned()),
            "pending" => ("refund_in_progress", "it is in progress".to_owned()),
            _ => (
                "refund_not_retryable",
                "it was paid offline: return the money outside orderflow".to_owned(),
            ),
        };
        return Err(StoreError::conflict(
            &order_id,
            code,
            format!("the refund of payment {payment_id} cannot be retried: {why}"),
        ));
    }
    let attempt: i64 = row.get(2);
    let step = format!("refund:{payment_id}:retry:{attempt}");
    append_event_if_order(
        &mut tx,
        &order_id,
        step,
        Some("ops_retry"),
        Some(payment_id),
        at,
    )
    .await?;
    tx.commit().await?;
    let request = RefundPayment {
        order_id,
        user_id: row.get(8),
        payment: orderflow_workflows::model::PaymentReceived {
            payment_id: payment_id.to_owned(),
            event_id: row.get(5),
            amount: row.get(6),
            currency: row.get(7),
            capture_before_ms: None,
        },
        reason: row.get(3),
        requested_at_ms: at,
        idempotency_key: Some(row.get(4)),
    };
    Ok((request, attempt))
}

/// A void is recorded with `void-{payment_id}` (its idempotency key at the provider) as its
/// `provider_refund_id`: the provider holds no refund for it.
pub const VOID_PREFIX: &str = "void-";

/// The outcome a refund row holds (`status`, `provider_refund_id`, `failure`), or `None` while
/// it is `pending`. `failure` is stored as `<code>: <message>`.
pub fn refund_outcome(
    status: &str,
    provider_refund_id: Option<String>,
    failure: Option<String>,
) -> Option<RefundOutcome> {
    match status {
        "succeeded" => {
            let provider_refund_id = provider_refund_id.unwrap_or_default();
            Some(RefundOutcome::Succeeded {
                voided: provider_refund_id.starts_with(VOID_PREFIX),
                provider_refund_id,
            })
        }
        "failed" => {
            let failure = failure.unwrap_or_default();
            let (code, message) = failure.split_once(": ").unwrap_or(("refused", &failure));
            Some(RefundOutcome::Failed {
                code: code.to_owned(),
                message: message.to_owned(),
            })
        }
        _ => None,
    }
}

/// What a refund row stores of an outcome: `status`, `provider_refund_id`, `failure` (as
/// `<code>: <message>`); [`refund_outcome`] reads it back.
pub fn refund_columns(outcome: &RefundOutcome) -> (&'static str, Option<&str>, Option<String>) {
    match outcome {
        RefundOutcome::Succeeded {
            provider_refund_id, ..
        } => ("succeeded", Some(provider_refund_id.as_str()), None),
        RefundOutcome::Failed { code, message } => {
            ("failed", None, Some(format!("{code}: {message}")))
        }
    }
}

/// An authorization that paid its order was captured at the provider: its row says when, and
/// the order's log has `captured:<payment_id>`. Done again, it changes nothing; a payment that
/// is not the order's authorization is a conflict, never an `Ok`.
pub async fn record_capture(db: &Db, input: &CaptureAuthorization) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE payments SET captured_at = $3
         WHERE payment_id = $1 AND order_id = $2 AND status = 'captured'
             AND capture_before IS NOT NULL AND captured_at IS NULL",
    )
    .bind(&input.payment_id)
    .bind(order_id)
    .bind(input.at_ms)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        let done: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT captured_at FROM payments
             WHERE payment_id = $1 AND order_id = $2 AND capture_before IS NOT NULL",
        )
        .bind(&input.payment_id)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        return match done {
            Some(Some(_)) => Ok(()),
            _ => Err(StoreError::conflict(
                order_id,
                "capture_conflict",
                format!(
                    "payment {} is not an uncaptured authorization of this order",
                    input.payment_id
                ),
            )),
        };
    }
    let step = format!("captured:{}", input.payment_id);
    append_event_if_order(
        &mut tx,
        order_id,
        step,
        None,
        Some(&input.payment_id),
        input.at_ms,
    )
    .await?;
    crate::faults::point("capture_authorization.before_commit", order_id, None);
    tx.commit().await?;
    Ok(())
}

/// Refund step 3: `pending -> succeeded | failed`. A retry that finds the same outcome is a
/// no-op; any other state is a conflict, never an `Ok`.
pub async fn record_refund_result(db: &Db, input: &RecordRefundResult) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let (status, refund_id, failure) = refund_columns(&input.outcome);
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE refunds SET status = $2, provider_refund_id = $3, failure = $4, updated_at = $5,
             method = $7
         WHERE payment_id = $1 AND order_id = $6 AND status = 'pending'",
    )
    .bind(&input.payment_id)
    .bind(status)
    .bind(refund_id)
    .bind(failure.as_deref())
    .bind(input.at_ms)
    .bind(order_id)
    .bind(match input.outcome {
        RefundOutcome::Succeeded { voided: true, .. } => "void",
        _ => "refund",
    })
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
    let attempt: i64 = sqlx::query_scalar("SELECT attempt FROM refunds WHERE payment_id = $1")
        .bind(&input.payment_id)
        .fetch_one(&mut *tx)
        .await?;
    let step = match attempt {
        1 => format!("refund:{}:{status}", input.payment_id),
        n => format!("refund:{}:{status}:{n}", input.payment_id),
    };
    append_event_if_order(
        &mut tx,
        order_id,
        step,
        failure.as_deref(),
        Some(&input.payment_id),
        input.at_ms,
    )
    .await?;
    crate::faults::point("refund_result.before_commit", order_id, None);
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
    /// The provider's checkout session, if the event names one.
    pub session_id: Option<String>,
    /// `payment.authorized`: until when it can be captured (Unix ms).
    pub capture_before: Option<i64>,
}

/// The event types that report a payment: captured, or only authorized.
pub const PAYMENT_EVENTS_SQL: &str = "('payment.succeeded', 'payment.authorized')";

impl InboxEvent {
    /// The payment it reports, as the order's workflow receives it.
    pub fn payment(&self) -> PaymentReceived {
        PaymentReceived {
            payment_id: self.payment_id.clone(),
            event_id: self.event_id.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            capture_before_ms: self.capture_before,
        }
    }
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
        "INSERT INTO webhook_inbox (event_id, event_type, order_id, payment_id, amount, currency, outcome, received_at, session_id, capture_before)
         VALUES ($1, $2, $3, $4, $5, $6, 'received', $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&e.event_id)
    .bind(&e.event_type)
    .bind(&e.order_id)
    .bind(&e.payment_id)
    .bind(e.amount)
    .bind(&e.currency)
    .bind(e.received_at)
    .bind(e.session_id.as_deref())
    .bind(e.capture_before)
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
