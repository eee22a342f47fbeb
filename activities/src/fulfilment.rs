//! Fulfilment of a paid order, and undoing it when a paid order is cancelled.
//!
//! - `fulfil`: digital lines grant an entitlement (keyed by order and SKU), physical lines
//!   create one pending shipment; an order without physical goods is `fulfilled` at once. The
//!   quota is checked one last time here: a violation is a business error (the workflow
//!   compensates), never retried into success.
//! - `mark_shipped`: shipment `pending -> shipped` and order `paid -> fulfilled`, together.
//! - `stop`: shipment `pending -> intercepted`, the order's entitlements revoked.
//! - `cancel_after_payment`: order `paid | fulfilled -> cancelled`, its captured payment owed
//!   back, and its wallet funds returned, in one transaction.
//!
//! Each is one transaction, idempotent on the order, and starts with a write.

use crate::error::{Entity, StoreError};
use crate::funds::{self, WALLET};
use crate::holds::{Move, expect_one};
use crate::orders::{Step, append_event, status_of};
use crate::{Db, quota};
use orderflow_workflows::model::{Fulfilment, MarkCancelled, OrderAt, OrderStatus};
use sqlx::Row;

/// Starts a transaction on an order with a write (the SQLite write lock, and the row locked on
/// PostgreSQL), then reads its `(status, user_id)`.
async fn lock_order(
    tx: &mut crate::holds::Tx<'_>,
    order_id: &str,
) -> Result<(OrderStatus, String), StoreError> {
    sqlx::query("UPDATE orders SET updated_at = updated_at WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT status, user_id FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    Ok((OrderStatus::try_from(row.get::<String, _>(0))?, row.get(1)))
}

/// Whether the order has goods to ship (a physical line): its payment is then captured when
/// they ship, under `ORDER_CAPTURE=at_shipment`.
pub async fn ships(db: &Db, order_id: &str) -> Result<bool, StoreError> {
    let physical: Option<String> = sqlx::query_scalar(
        "SELECT i.sku FROM order_items i JOIN skus s ON s.sku = i.sku
         WHERE i.order_id = $1 AND s.kind = 'physical' LIMIT 1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    Ok(physical.is_some())
}

/// Grants what a paid order bought. A retry finds it done and answers the same.
pub async fn fulfil(db: &Db, input: &OrderAt) -> Result<Fulfilment, StoreError> {
    let order_id = input.order_id.as_str();
    let at = input.at_ms;
    let mut tx = db.begin().await?;
    let (status, user_id) = lock_order(&mut tx, order_id).await?;
    let lines: Vec<(String, i64, String)> = sqlx::query(
        "SELECT i.sku, i.quantity, s.kind FROM order_items i JOIN skus s ON s.sku = i.sku
         WHERE i.order_id = $1 ORDER BY i.sku",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let needs_shipping = lines.iter().any(|(_, _, kind)| kind == "physical");
    match status {
        OrderStatus::Paid => {}
        OrderStatus::Fulfilled => return Ok(Fulfilment { needs_shipping }),
        other => {
            return Err(StoreError::conflict(
                order_id,
                "invalid_transition",
                format!("cannot fulfil: the order is {other}"),
            ));
        }
    }
    for (sku, quantity, kind) in &lines {
        if let Err(refusal) = quota::still_within(&mut tx, &user_id, sku).await? {
            return Err(StoreError::conflict(
                order_id,
                "quota_exceeded",
                refusal.message,
            ));
        }
        if kind == "digital" {
            sqlx::query(
                "INSERT INTO entitlements (entitlement_id, user_id, sku, quantity, source, source_id, status, granted_at)
                 VALUES ($1, $2, $3, $4, 'order', $5, 'active', $6) ON CONFLICT (entitlement_id) DO NOTHING",
            )
            .bind(format!("ord:{order_id}:{sku}"))
            .bind(&user_id)
            .bind(sku)
            .bind(quantity)
            .bind(order_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    if needs_shipping {
        sqlx::query(
            "INSERT INTO shipments (order_id, status, created_at) VALUES ($1, 'pending', $2)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let step = Step::within("paid", "shipment:pending".into(), None);
        append_event(&mut tx, order_id, step, at).await?;
    } else {
        to_fulfilled(&mut tx, order_id, "entitlements_granted", at).await?;
    }
    crate::faults::point("fulfil.before_commit", order_id, None);
    tx.commit().await?;
    Ok(Fulfilment { needs_shipping })
}

async fn to_fulfilled(
    tx: &mut crate::holds::Tx<'_>,
    order_id: &str,
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    let moved = sqlx::query(
        "UPDATE orders SET status = 'fulfilled', fulfilled_at = $2, updated_at = $2
         WHERE order_id = $1 AND status = 'paid'",
    )
    .bind(order_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    expect_one(
        moved.rows_affected(),
        order_id,
        "invalid_transition",
        || "cannot fulfil: the order is no longer paid".into(),
    )?;
    let step = Step::status(Some("paid"), "fulfilled", Some(reason));
    append_event(tx, order_id, step, at).await
}

/// The shipment left: `pending -> shipped`, and the order is `fulfilled`.
pub async fn mark_shipped(db: &Db, input: &OrderAt) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE shipments SET status = 'shipped', shipped_at = $2 WHERE order_id = $1 AND status = 'pending'",
    )
    .bind(order_id)
    .bind(input.at_ms)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        let status: Option<String> =
            sqlx::query("SELECT status FROM shipments WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get(0));
        return match status.as_deref() {
            Some("shipped") => Ok(()),
            other => Err(StoreError::conflict(
                order_id,
                "order_not_shippable",
                format!("the shipment is {}", other.unwrap_or("missing")),
            )),
        };
    }
    to_fulfilled(&mut tx, order_id, "shipped", input.at_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Stops fulfilment: a pending shipment is intercepted, the order's entitlements revoked. A
/// shipment that already left is a conflict: that order can no longer be cancelled.
pub async fn stop(db: &Db, input: &OrderAt) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE shipments SET status = 'intercepted', intercepted_at = $2 WHERE order_id = $1 AND status = 'pending'",
    )
    .bind(order_id)
    .bind(input.at_ms)
    .execute(&mut *tx)
    .await?;
    let shipment: Option<String> = sqlx::query("SELECT status FROM shipments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
    if shipment.as_deref() == Some("shipped") {
        return Err(StoreError::conflict(
            order_id,
            "order_already_shipped",
            "the shipment has left",
        ));
    }
    revoke_entitlements(&mut tx, order_id, input.at_ms).await?;
    let status = status_of(&mut tx, order_id)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Order, order_id))?;
    let step = Step::within(status.as_str(), "fulfilment:stopped".into(), None);
    append_event(&mut tx, order_id, step, input.at_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Revokes the order's active entitlements at `at`, in the caller's transaction; answers how
/// many. Used by a stopped fulfilment and by a dispute.
pub(crate) async fn revoke_entitlements(
    tx: &mut crate::holds::Tx<'_>,
    order_id: &str,
    at: i64,
) -> Result<i64, StoreError> {
    let revoked = sqlx::query(
        "UPDATE entitlements SET status = 'revoked', revoked_at = $2
         WHERE source = 'order' AND source_id = $1 AND status = 'active'",
    )
    .bind(order_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(revoked.rows_affected() as i64)
}

/// `cancel_after_payment` inside the caller's transaction.
pub(crate) async fn cancel_after_payment_in(
    tx: &mut crate::holds::Tx<'_>,
    input: &MarkCancelled,
) -> Result<(), StoreError> {
    let order_id = input.order_id.as_str();
    let reason = input.reason.as_str();
    let at = input.at_ms;
    let (from, _) = lock_order(tx, order_id).await?;
    match from {
        OrderStatus::Paid | OrderStatus::Fulfilled => {}
        OrderStatus::Cancelled => return Ok(()),
        other => {
            return Err(StoreError::conflict(
                order_id,
                "invalid_transition",
                format!("cannot cancel after payment: the order is {other}"),
            ));
        }
    }
    let moved = sqlx::query(
        "UPDATE orders SET status = 'cancelled', cancel_reason = $2, cancelled_at = $3, updated_at = $3
         WHERE order_id = $1 AND status = $4",
    )
    .bind(order_id)
    .bind(reason)
    .bind(at)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    expect_one(
        moved.rows_affected(),
        order_id,
        "invalid_transition",
        || format!("the order left {from} during the cancel"),
    )?;
    sqlx::query(
        "UPDATE payments SET status = 'unapplied', reason = $2 WHERE order_id = $1 AND status = 'captured'",
    )
    .bind(order_id)
    .bind(match input.reason {
        orderflow_workflows::model::CancelReason::FulfilmentFailed => "fulfilment_failed",
        _ => "order_cancelled",
    })
    .execute(&mut **tx)
    .await?;
    funds::settle_in(tx, WALLET, order_id, Move::Return, at).await?;
    let step = Step::status(Some(from.as_str()), "cancelled", Some(reason));
    append_event(tx, order_id, step, at).await?;
    Ok(())
}
