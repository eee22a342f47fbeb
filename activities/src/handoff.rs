//! Where a reported payment goes, and the durable decision about a payment its order cannot
//! take.
//!
//! - [`hand_on`]: one verified inbox event to its destination, exactly as the webhook does it
//!   and as the inbox re-drive does it again for events never handed on. A payment that pays a
//!   pending order with a running workflow is signalled to that workflow. Every other payment
//!   (unknown order, another order's payment, wrong amount or currency, order workflow closed
//!   or missing) goes to its `payment-{payment_id}` decision by signal-with-start: it never
//!   depends on its order workflow being alive.
//! - [`redrive`], [`sweep_provider`] and [`sweep_disputes`]: reconciliation's part. Inbox
//!   events never handed on are handed on again; payments the provider captured, and disputes
//!   it opened, that orderflow never heard of (every webhook lost) are read from the provider's
//!   listing and handed on, or recorded, like a webhook.
//! - [`hold`], [`decide`], [`record_decision`]: the decision's activities. `decide` reads the
//!   provider's record of the payment first (what was really captured, for which order) and
//!   never refunds a payment that paid an order.
//!
//! Nothing here moves money: the refund steps do, exactly once on the refund row.

use crate::Db;
use crate::error::{Entity, Service, StoreError};
use crate::orders::append_event_if_order;
use crate::payments::{InboxEvent, payment_status};
use crate::provider::PaymentProvider;
use orderflow_store as store;
use orderflow_workflows::decide::{pays_for, refund_reason, secs_to_ms};
use orderflow_workflows::model::{
    OrderStatus, PaymentDecided, PaymentReceived, PaymentVerdict, RefundPayment, SessionEnded,
    StrayPayment,
};
use orderflow_workflows::{
    OrderWorkflow, PaymentDecisionWorkflow, payment_workflow_id, workflow_id,
};
use sqlx::Row;
use temporalio_client::errors::{WorkflowInteractionError, WorkflowStartError};
use temporalio_client::{
    Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowSignalOptions,
    WorkflowStartOptions,
};
use temporalio_common::{HasWorkflowDefinition, SignalDefinition};

/// Where payments are handed on to: the Temporal client, the task queue of decisions, and how
/// long a payment for an unknown order is held before it is refunded.
#[derive(Clone)]
pub struct HandOff {
    pub client: Client,
    pub task_queue: String,
    pub unknown_order_hold_secs: u64,
}

fn temporal_down(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(Service::Temporal, e)
}

/// Why `order` cannot take `payment`, paid through checkout `session`: the session is another
/// order's (`order_mismatch`), or the amount or currency is not the order's (`amount_mismatch`).
async fn not_for(
    db: &Db,
    order: &store::Order,
    payment: &PaymentReceived,
    session: Option<&str>,
) -> Result<Option<&'static str>, StoreError> {
    if let Some(session) = session
        && session_order(db, session)
            .await?
            .is_some_and(|o| o != order.order_id)
    {
        tracing::error!(%session, "a payment names another order than its checkout session's");
        return Ok(Some("order_mismatch"));
    }
    if !pays_for(payment, order.payable_amount, &order.currency) {
        return Ok(Some("amount_mismatch"));
    }
    Ok(None)
}

/// Hands a verified `payment.succeeded` event on. Returns the outcome the inbox records and the
/// webhook answers: `signalled`, `already_captured`, or why it went to its decision
/// (`unknown_order`, `order_mismatch`, `amount_mismatch`, `refund_started`, `workflow_missing`).
pub async fn hand_on(
    db: &Db,
    to: &HandOff,
    event: &InboxEvent,
) -> Result<&'static str, StoreError> {
    let payment = event.payment();
    let order = match store::get_order(db, &event.order_id).await {
        Ok(order) => order,
        Err(StoreError::NotFound { .. }) => {
            tracing::warn!("a payment names an order that does not exist: held, then refunded");
            return stray(to, event, payment, "unknown_order").await;
        }
        Err(e) => return Err(e),
    };
    match payment_status(db, &event.payment_id).await? {
        Some((order_id, status)) if status == "captured" && order_id == order.order_id => {
            return Ok("already_captured");
        }
        Some((order_id, _)) if order_id != order.order_id => {
            tracing::error!(recorded_for = %order_id, "a payment is reported for two orders");
            return stray(to, event, payment, "order_mismatch").await;
        }
        _ => {}
    }
    if let Some(reason) = not_for(db, &order, &payment, event.session_id.as_deref()).await? {
        return stray(to, event, payment, reason).await;
    }
    match signal_order(&to.client, &order.order_id, payment.clone()).await? {
        true => Ok("signalled"),
        false if order.status == OrderStatus::PendingPayment => {
            tracing::error!("a payment for a pending order whose workflow is gone: held");
            stray(to, event, payment, "workflow_missing").await
        }
        false => stray(to, event, payment, "refund_started").await,
    }
}

/// The order a checkout session we opened belongs to.
async fn session_order(db: &Db, session_id: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query("SELECT order_id FROM checkout_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(db)
            .await?
            .map(|r| r.get(0)),
    )
}

/// Signals a payment to its order's workflow; `false` if that workflow is closed or missing.
/// The workflow deduplicates by `payment_id`.
pub async fn signal_order(
    client: &Client,
    order_id: &str,
    payment: PaymentReceived,
) -> Result<bool, StoreError> {
    let options = WorkflowSignalOptions::builder()
        .request_id(format!("pay-{}", payment.event_id))
        .build();
    let signal = OrderWorkflow::payment_succeeded;
    signal_order_workflow(client, order_id, signal, payment, options).await
}

/// Tells the order's workflow that the provider ended a checkout session unpaid, so that it
/// never hands it out again; `false` if the workflow is closed or missing (nothing waits for a
/// session then).
pub async fn session_ended(
    client: &Client,
    order_id: &str,
    session_id: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let options = WorkflowSignalOptions::builder()
        .request_id(format!("session-{event_id}"))
        .build();
    let ended = SessionEnded {
        session_id: session_id.to_owned(),
    };
    signal_order_workflow(
        client,
        order_id,
        OrderWorkflow::session_ended,
        ended,
        options,
    )
    .await
}

/// Sends `signal` to the order's workflow; `false` if that workflow is closed or missing
/// (then the database row is the truth), an error if Temporal did not answer.
pub async fn signal_order_workflow<S>(
    client: &Client,
    order_id: &str,
    signal: S,
    input: S::Input,
    options: WorkflowSignalOptions,
) -> Result<bool, StoreError>
where
    S: SignalDefinition<Workflow = <OrderWorkflow as HasWorkflowDefinition>::Run>,
    S::Input: Send,
{
    let handle = client.get_workflow_handle::<OrderWorkflow>(workflow_id(order_id));
    match handle.signal(signal, input, options).await {
        Ok(()) => Ok(true),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
        Err(e) => Err(temporal_down(e)),
    }
}

/// Sends the payment to its `payment-{payment_id}` decision (signal-with-start: a running
/// decision gets the report, a closed one is followed by a new run that re-reads the truth).
async fn stray(
    to: &HandOff,
    event: &InboxEvent,
    payment: PaymentReceived,
    reason: &'static str,
) -> Result<&'static str, StoreError> {
    let input = StrayPayment {
        payment,
        order_id: event.order_id.clone(),
        reason: reason.to_owned(),
        unknown_order_hold_secs: to.unknown_order_hold_secs,
        received_at_ms: event.received_at,
    };
    let options = WorkflowStartOptions::new(
        to.task_queue.clone(),
        payment_workflow_id(&input.payment.payment_id),
    )
    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
    .build();
    match to
        .client
        .signal_with_start_workflow(
            PaymentDecisionWorkflow::run,
            input.clone(),
            PaymentDecisionWorkflow::reported,
            input,
            options,
        )
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(reason),
        Err(e) => Err(temporal_down(e)),
    }
}

/// Records a payment as held for its decision and answers when the decision is due; `None` if
/// it was refunded already, or its refund failed (then ops retry it). A payment decided
/// otherwise before is decided again: a new report may find its order changed.
pub async fn hold(db: &Db, input: &StrayPayment) -> Result<Option<i64>, StoreError> {
    let p = &input.payment;
    let wait = match input.reason.as_str() {
        "unknown_order" => secs_to_ms(input.unknown_order_hold_secs),
        _ => 0,
    };
    let due = input.received_at_ms.saturating_add(wait);
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO payment_decisions (payment_id, order_id, event_id, amount, currency, reason, state, decide_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'holding', $7, $8, $8) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(&p.payment_id)
    .bind(&input.order_id)
    .bind(&p.event_id)
    .bind(p.amount)
    .bind(&p.currency)
    .bind(&input.reason)
    .bind(due)
    .bind(input.received_at_ms)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        let step = format!("payment:{}:held", p.payment_id);
        append_event_if_order(
            &mut tx,
            &input.order_id,
            step,
            Some(&input.reason),
            Some(&p.payment_id),
            input.received_at_ms,
        )
        .await?;
        tx.commit().await?;
        return Ok(Some(due));
    }
    sqlx::query(
        "UPDATE payment_decisions SET state = 'holding', updated_at = $2
         WHERE payment_id = $1 AND state IN ('applied', 'nothing_to_do')",
    )
    .bind(&p.payment_id)
    .bind(input.received_at_ms)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query("SELECT state, decide_at FROM payment_decisions WHERE payment_id = $1")
        .bind(&p.payment_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(match row.get::<String, _>(0).as_str() {
        "holding" => Some(row.get(1)),
        _ => None,
    })
}

/// Decides a held payment (see the module doc).
pub async fn decide(
    db: &Db,
    provider: &PaymentProvider,
    client: &Client,
    input: &StrayPayment,
    now_ms: i64,
) -> Result<PaymentVerdict, StoreError> {
    let payment_id = input.payment.payment_id.as_str();
    let captured = provider
        .payment(payment_id)
        .await
        .map_err(|e| StoreError::unavailable(Service::Provider, e))?;
    let Some(captured) = captured else {
        return Ok(PaymentVerdict::NothingToDo {
            detail: format!("the provider has no payment {payment_id}: nothing was captured"),
        });
    };
    // What was really captured is what is owed back.
    let payment = PaymentReceived {
        payment_id: payment_id.to_owned(),
        event_id: input.payment.event_id.clone(),
        amount: captured.amount,
        currency: captured.currency.clone(),
        capture_before_ms: captured.authorized_until_ms(),
    };
    let refund = |order_id: &str, user_id: &str, reason: &str| {
        PaymentVerdict::Refund(RefundPayment {
            order_id: order_id.to_owned(),
            user_id: user_id.to_owned(),
            payment: payment.clone(),
            reason: reason.to_owned(),
            requested_at_ms: now_ms,
            idempotency_key: None,
        })
    };
    match payment_status(db, payment_id).await? {
        Some((order_id, status)) if status == "captured" => {
            return Ok(PaymentVerdict::NothingToDo {
                detail: format!("it paid order {order_id}"),
            });
        }
        // Owed back already (its refund may be done, pending or failed): the refund row says.
        Some((order_id, _)) => {
            let user: Option<String> =
                sqlx::query_scalar("SELECT user_id FROM orders WHERE order_id = $1")
                    .bind(&order_id)
                    .fetch_optional(db)
                    .await?;
            return Ok(refund(&order_id, &user.unwrap_or_default(), &input.reason));
        }
        None => {}
    }
    let order = match store::get_order(db, &input.order_id).await {
        Ok(order) => order,
        Err(StoreError::NotFound { .. }) => {
            return Ok(refund(&input.order_id, "", "unknown_order"));
        }
        Err(e) => return Err(e),
    };
    if captured.order_id != order.order_id {
        return Ok(refund(&order.order_id, &order.user_id, "order_mismatch"));
    }
    if let Some(reason) = not_for(db, &order, &payment, captured.session_id.as_deref()).await? {
        return Ok(refund(&order.order_id, &order.user_id, reason));
    }
    let status = order.status;
    if status == OrderStatus::PendingPayment {
        return Ok(
            match signal_order(client, &order.order_id, payment.clone()).await? {
                true => PaymentVerdict::Applied {
                    detail: format!("handed to the workflow of order {}", order.order_id),
                },
                false => PaymentVerdict::Wait {
                    secs: 30,
                    detail: "its order is pending without a running workflow: reconciliation \
                         repairs it, with this payment"
                        .into(),
                },
            },
        );
    }
    let reason = refund_reason(status, &payment, order.payable_amount, &order.currency);
    Ok(refund(&order.order_id, &order.user_id, reason))
}

/// Records how a decision ended.
pub async fn record_decision(db: &Db, d: &PaymentDecided) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE payment_decisions SET state = $2, detail = $3, updated_at = $4 WHERE payment_id = $1",
    )
    .bind(&d.payment_id)
    .bind(&d.state)
    .bind(&d.detail)
    .bind(d.at_ms)
    .execute(&mut *tx)
    .await?;
    let order_id: String =
        sqlx::query_scalar("SELECT order_id FROM payment_decisions WHERE payment_id = $1")
            .bind(&d.payment_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found(Entity::PaymentDecision, &d.payment_id))?;
    crate::holds::expect_one(done.rows_affected(), &order_id, "decision_missing", || {
        format!("no decision row for payment {}", d.payment_id)
    })?;
    let step = format!("payment:{}:{}", d.payment_id, d.state);
    append_event_if_order(
        &mut tx,
        &order_id,
        step,
        Some(&d.detail),
        Some(&d.payment_id),
        d.at_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Hands on again every inbox event received before `before_ms` and never processed (a crash or
/// a Temporal outage between receipt and hand-on), oldest first, at most `limit`. Returns how
/// many were handed on.
pub async fn redrive(
    db: &Db,
    to: &HandOff,
    before_ms: i64,
    limit: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, event_type, order_id, payment_id, amount, currency, received_at, session_id, capture_before
         FROM webhook_inbox WHERE processed_at IS NULL AND received_at < $1
         ORDER BY received_at LIMIT $2",
    )
    .bind(before_ms)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut handed = 0;
    for r in rows {
        let event = InboxEvent {
            event_id: r.get(0),
            event_type: r.get(1),
            order_id: r.get(2),
            payment_id: r.get(3),
            amount: r.get(4),
            currency: r.get(5),
            received_at: r.get(6),
            session_id: r.get(7),
            capture_before: r.get(8),
        };
        let outcome = if event.event_type == crate::provider::CHARGE_DISPUTED {
            crate::disputes::record(db, &event, now_ms).await?
        } else {
            hand_on(db, to, &event).await?
        };
        tracing::warn!(event_id = %event.event_id, order_id = %event.order_id, %outcome, "inbox event re-driven");
        crate::payments::processed(db, &event.event_id, outcome, now_ms).await?;
        handed += 1;
    }
    Ok(handed)
}

/// The sweep's watermark in `sweep_watermarks`.
const SWEEP_WATERMARK: &str = "provider_payments";

/// How far before its watermark the sweep looks again, so that a provider whose listing shows
/// a capture later than the time stamped on it (an eventually consistent listing), or whose
/// clock is behind orderflow's by up to this much, is still covered.
pub const SWEEP_OVERLAP_SECS: i64 = 15 * 60;

/// Hands on every payment the provider captured before `before_secs` (Unix seconds) that
/// orderflow has no trace of (no payment row, no decision, no inbox event): its webhooks were
/// all lost. Each becomes an inbox event (`sweep-<payment_id>`) and is handed on exactly as a
/// webhook would have been. Returns how many.
///
/// It reads only the payments created since the last finished sweep (less
/// [`SWEEP_OVERLAP_SECS`]), a page at a time, and checks each against the database by its id:
/// its cost is the window, never every payment ever taken. The first sweep reads the whole
/// history once. Only a sweep that read every page moves the watermark, and only forward.
pub async fn sweep_provider(
    db: &Db,
    provider: &PaymentProvider,
    to: &HandOff,
    before_secs: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let through = watermark(db, SWEEP_WATERMARK).await?;
    let since = through.map_or(0, |t| (t - SWEEP_OVERLAP_SECS).max(0));
    let mut after: Option<String> = None;
    let (mut read, mut handed) = (0usize, 0u64);
    loop {
        let page = provider
            .payments_created_since(since, after.as_deref())
            .await
            .map_err(|e| StoreError::unavailable(Service::Provider, e))?;
        read += page.data.len();
        for p in page.data.iter().filter(|p| p.created < before_secs) {
            if !known(db, &p.id).await? && hand_on_lost(db, to, p, now_ms).await? {
                handed += 1;
            }
        }
        after = page.next_cursor(|p| &p.id);
        if after.is_none() {
            break;
        }
    }
    advance_watermark(db, SWEEP_WATERMARK, before_secs, now_ms).await?;
    tracing::debug!(since, read, handed, "provider swept");
    Ok(handed)
}

/// The dispute sweep's watermark in `sweep_watermarks`.
const DISPUTE_WATERMARK: &str = "provider_disputes";

/// Records every dispute the provider opened before `before_secs` (Unix seconds) that
/// orderflow never heard of (no dispute row, no `charge.disputed` inbox event): its webhooks
/// were all lost. Each becomes an inbox event (`sweep-dispute-<payment_id>`) and is recorded
/// exactly as its webhook would have been. Returns how many.
///
/// Like [`sweep_provider`], it reads only the payments disputed since its last finished run
/// (less [`SWEEP_OVERLAP_SECS`]), and only a run that read every page moves its watermark.
pub async fn sweep_disputes(
    db: &Db,
    provider: &PaymentProvider,
    before_secs: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let through = watermark(db, DISPUTE_WATERMARK).await?;
    let since = through.map_or(0, |t| (t - SWEEP_OVERLAP_SECS).max(0));
    let mut after: Option<String> = None;
    let mut recorded = 0;
    loop {
        let page = provider
            .payments_disputed_since(since, after.as_deref())
            .await
            .map_err(|e| StoreError::unavailable(Service::Provider, e))?;
        for p in &page.data {
            let (Some(amount), Some(at)) = (p.disputed_amount, p.disputed_at) else {
                continue;
            };
            if at < before_secs && record_lost_dispute(db, p, amount, now_ms).await? {
                recorded += 1;
            }
        }
        after = page.next_cursor(|p| &p.id);
        if after.is_none() {
            break;
        }
    }
    advance_watermark(db, DISPUTE_WATERMARK, before_secs, now_ms).await?;
    Ok(recorded)
}

/// A dispute nobody reported, into the inbox and recorded like its webhook. `false` when
/// orderflow knew of it already.
async fn record_lost_dispute(
    db: &Db,
    p: &crate::provider::PaymentObject,
    amount: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let known: Option<String> = sqlx::query_scalar(
        "SELECT payment_id FROM disputes WHERE payment_id = $1
         UNION ALL SELECT payment_id FROM webhook_inbox WHERE payment_id = $2
             AND event_type = 'charge.disputed'
         LIMIT 1",
    )
    .bind(&p.id)
    .bind(&p.id)
    .fetch_optional(db)
    .await?;
    if known.is_some() {
        return Ok(false);
    }
    let event = InboxEvent {
        event_id: format!("sweep-dispute-{}", p.id),
        event_type: crate::provider::CHARGE_DISPUTED.into(),
        order_id: p.order_id.clone(),
        payment_id: p.id.clone(),
        amount,
        currency: p.currency.clone(),
        received_at: now_ms,
        session_id: p.session_id.clone(),
        capture_before: None,
    };
    if crate::payments::receive(db, &event).await? != crate::payments::Inbox::New {
        return Ok(false);
    }
    let outcome = crate::disputes::record(db, &event, now_ms).await?;
    tracing::warn!(payment_id = %p.id, order_id = %p.order_id, %outcome, "a dispute the provider opened but never reported: recorded");
    crate::payments::processed(db, &event.event_id, outcome, now_ms).await?;
    Ok(true)
}

/// How far a sweep has read (Unix seconds), if it ever finished.
async fn watermark(db: &Db, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT through FROM sweep_watermarks WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

/// Moves a sweep's watermark forward to `through` (never back).
async fn advance_watermark(
    db: &Db,
    name: &str,
    through: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sweep_watermarks (name, through, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET through = excluded.through, updated_at = excluded.updated_at
         WHERE sweep_watermarks.through < excluded.through",
    )
    .bind(name)
    .bind(through)
    .bind(now_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether orderflow has any trace of `payment_id`: a payment row, a decision or an inbox event.
async fn known(db: &Db, payment_id: &str) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT payment_id FROM payments WHERE payment_id = $1
         UNION ALL SELECT payment_id FROM payment_decisions WHERE payment_id = $2
         UNION ALL SELECT payment_id FROM webhook_inbox WHERE payment_id = $3
             AND event_type IN {}
         LIMIT 1",
        crate::payments::PAYMENT_EVENTS_SQL
    );
    let found: Option<String> = sqlx::query_scalar(&sql)
        .bind(payment_id)
        .bind(payment_id)
        .bind(payment_id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// A captured payment nobody reported, into the inbox and on like a webhook. `false` when its
/// sweep event was already there (another run got to it first).
async fn hand_on_lost(
    db: &Db,
    to: &HandOff,
    p: &crate::provider::PaymentObject,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let event = InboxEvent {
        event_id: format!("sweep-{}", p.id),
        event_type: match p.authorized_until_ms() {
            Some(_) => crate::provider::PAYMENT_AUTHORIZED,
            None => crate::provider::PAYMENT_SUCCEEDED,
        }
        .into(),
        order_id: p.order_id.clone(),
        payment_id: p.id.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
        received_at: now_ms,
        session_id: p.session_id.clone(),
        capture_before: p.authorized_until_ms(),
    };
    if crate::payments::receive(db, &event).await? != crate::payments::Inbox::New {
        return Ok(false);
    }
    let outcome = hand_on(db, to, &event).await?;
    tracing::warn!(payment_id = %p.id, order_id = %p.order_id, %outcome, "a payment the provider captured but never reported: handed on");
    crate::payments::processed(db, &event.event_id, outcome, now_ms).await?;
    Ok(true)
}
