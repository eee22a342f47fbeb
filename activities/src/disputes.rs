//! Disputes: a payment the payer's bank contests (`charge.disputed`), recorded once per payment
//! with what was done about it.
//!
//! [`record`] is one transaction, called for a verified inbox event by the webhook and again by
//! the inbox re-drive (so a crash between the inbox and the record loses nothing):
//! - the `disputes` row, keyed by the payment: a redelivery, or a second event about the same
//!   dispute, finds it and changes nothing;
//! - the order's digital goods have their entitlements revoked;
//! - an order with physical goods, a payment orderflow refunded (it would be paid back twice),
//!   or a payment orderflow cannot tie to an order, is flagged for ops (the audit lists it);
//! - the order's log gets `disputed:<payment_id>`, which publishes `order.disputed`.
//!
//! It never moves money and never changes an order's status: the provider takes the disputed
//! amount back itself, and the audit shows the dispute beside the payment it contests.

use crate::Db;
use crate::error::StoreError;
use crate::orders::append_event_if_order;
use crate::payments::InboxEvent;
use sqlx::Row;

/// What the inbox records and the webhook answers for a dispute.
pub const RECORDED: &str = "dispute_recorded";

/// A dispute as the audit lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Dispute {
    pub payment_id: String,
    pub order_id: String,
    /// The disputed amount, in minor units.
    pub amount: i64,
    pub currency: String,
    /// How many of the order's entitlements were revoked for it.
    pub revoked_entitlements: i64,
    /// Whether ops must act: physical goods, a refunded payment, or a payment with no order
    /// here.
    pub flagged_for_ops: bool,
    /// What was done, in words.
    pub detail: String,
    pub recorded_at: i64,
}

/// The order a disputed payment paid: the one its payment row names, else the event's, if it
/// exists here.
async fn disputed_order(
    tx: &mut crate::holds::Tx<'_>,
    event: &InboxEvent,
) -> Result<Option<String>, StoreError> {
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT order_id FROM payments WHERE payment_id = $1")
            .bind(&event.payment_id)
            .fetch_optional(&mut **tx)
            .await?;
    let order_id = recorded.unwrap_or_else(|| event.order_id.clone());
    let exists: Option<String> =
        sqlx::query_scalar("SELECT order_id FROM orders WHERE order_id = $1")
            .bind(&order_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(exists)
}

/// Records the dispute of `event` (a verified `charge.disputed`) and acts on it, at `at`, in one
/// transaction. Idempotent on the payment; answers [`RECORDED`] either way.
pub async fn record(db: &Db, event: &InboxEvent, at: i64) -> Result<&'static str, StoreError> {
    let mut tx = db.begin().await?;
    // The key claims the dispute first (the SQLite write lock; on PostgreSQL, a concurrent
    // delivery of the same dispute waits here and then finds it).
    let claimed = sqlx::query(
        "INSERT INTO disputes (payment_id, order_id, amount, currency, event_id,
             revoked_entitlements, flagged_for_ops, detail, recorded_at)
         VALUES ($1, $2, $3, $4, $5, 0, 1, 'recording', $6) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(&event.payment_id)
    .bind(&event.order_id)
    .bind(event.amount)
    .bind(&event.currency)
    .bind(&event.event_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        tracing::info!(payment_id = %event.payment_id, "dispute recorded already");
        return Ok(RECORDED);
    }
    let Some(order_id) = disputed_order(&mut tx, event).await? else {
        tracing::error!(payment_id = %event.payment_id, order_id = %event.order_id,
            "a dispute of a payment for no order here: flagged for ops");
        settle(
            &mut tx,
            event,
            &event.order_id,
            0,
            true,
            "no such order: ops review the payment",
        )
        .await?;
        tx.commit().await?;
        return Ok(RECORDED);
    };
    let kinds: Vec<String> = sqlx::query(
        "SELECT DISTINCT s.kind FROM order_items i JOIN skus s ON s.sku = i.sku
         WHERE i.order_id = $1 ORDER BY s.kind",
    )
    .bind(&order_id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let revoked = crate::fulfilment::revoke_entitlements(&mut tx, &order_id, at).await?;
    let physical = kinds.iter().any(|k| k == "physical");
    // A payment we refunded (or are refunding) and that is disputed too would be paid back
    // twice: ops contest the dispute with the refund.
    let refund: Option<String> =
        sqlx::query_scalar("SELECT status FROM refunds WHERE payment_id = $1")
            .bind(&event.payment_id)
            .fetch_optional(&mut *tx)
            .await?;
    let partly = crate::order_refunds::partial_refunds_of(&mut *tx, &order_id).await?;
    let mut done = vec![format!("{revoked} entitlement(s) revoked")];
    if partly > 0 {
        done.push(format!(
            "{partly} partial refund(s) of the payment: ops contest the dispute with them"
        ));
    }
    if physical {
        done.push("physical goods: ops review the shipment".into());
    }
    if let Some(status) = &refund {
        done.push(format!(
            "the payment's refund is {status}: ops contest the dispute with it"
        ));
    }
    let flagged = physical || refund.is_some() || partly > 0;
    let detail = done.join("; ");
    settle(&mut tx, event, &order_id, revoked, flagged, &detail).await?;
    let reason = if flagged {
        "flagged_for_ops"
    } else {
        "entitlements_revoked"
    };
    append_event_if_order(
        &mut tx,
        &order_id,
        format!("disputed:{}", event.payment_id),
        Some(reason),
        Some(&event.payment_id),
        at,
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(%order_id, payment_id = %event.payment_id, amount = event.amount, %detail, "payment disputed");
    Ok(RECORDED)
}

/// Writes what was done into the claimed row.
async fn settle(
    tx: &mut crate::holds::Tx<'_>,
    event: &InboxEvent,
    order_id: &str,
    revoked: i64,
    flagged: bool,
    detail: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE disputes SET order_id = $2, revoked_entitlements = $3, flagged_for_ops = $4,
             detail = $5 WHERE payment_id = $1",
    )
    .bind(&event.payment_id)
    .bind(order_id)
    .bind(revoked)
    .bind(i64::from(flagged))
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    crate::holds::expect_one(done.rows_affected(), order_id, "dispute_missing", || {
        format!("the dispute of {} vanished", event.payment_id)
    })
}

/// Every recorded dispute, oldest first.
pub async fn all(db: &Db) -> Result<Vec<Dispute>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT payment_id, order_id, amount, currency, revoked_entitlements, flagged_for_ops,
             detail, recorded_at FROM disputes ORDER BY recorded_at, payment_id",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Dispute {
        payment_id: r.get(0),
        order_id: r.get(1),
        amount: r.get(2),
        currency: r.get(3),
        revoked_entitlements: r.get(4),
        flagged_for_ops: r.get::<i64, _>(5) == 1,
        detail: r.get(6),
        recorded_at: r.get(7),
    })
    .collect())
}
