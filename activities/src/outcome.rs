//! One transaction per outcome: an order's status change, every hold move it implies and their
//! ledger rows commit together, or none of them does (seed 004: the wallet freezes and
//! unfreezes in the same transaction as the status).
//!
//! - [`pay`]: `pending_payment -> paid`, the payment recorded, every hold captured;
//! - [`cancel`]: `pending_payment -> cancelled` (a cancel or the deadline), every hold released;
//! - [`cancel_paid`]: `paid | fulfilled -> cancelled`, the payment owed back, the wallet,
//!   stock, coupon and points returned. The refund follows, exactly once on its own row.
//!
//! Each is idempotent like its parts: a retry after a commit finds the status moved and every
//! hold where it should be, and does nothing. A part that fails rolls the whole outcome back,
//! loudly; it is never reported as done.

use crate::error::StoreError;
use crate::funds::{POINTS, WALLET};
use crate::holds::{Move, Tx};
use crate::{Db, coupons, fulfilment, funds, orders, stock};
use orderflow_workflows::model::{CancelOrder, PayOrder, Resource, SettleHolds};

/// Moves every hold in `input.held` the same way in one transaction (in reservation order, as
/// every move is): a rejection, a resumed paid order's captures, reconciliation's releases.
pub async fn settle_holds(db: &Db, input: &SettleHolds) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let now = crate::now_ms();
    settle_each(&mut tx, &input.order_id, &input.held, input.how, now).await?;
    tx.commit().await?;
    Ok(())
}

/// One hold move in its own transaction.
pub async fn settle_one(
    db: &Db,
    order_id: &str,
    resource: Resource,
    how: Move,
) -> Result<(), StoreError> {
    let input = SettleHolds {
        order_id: order_id.to_owned(),
        held: vec![resource],
        how,
    };
    settle_holds(db, &input).await
}

/// Moves one held resource inside the outcome's transaction.
async fn settle(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    how: Move,
    now: i64,
) -> Result<(), StoreError> {
    match resource {
        Resource::Stock => stock::settle_in(tx, order_id, how, now).await,
        Resource::Coupon => coupons::settle_in(tx, order_id, how, now).await,
        Resource::Points => funds::settle_in(tx, POINTS, order_id, how, now).await,
        Resource::Wallet => funds::settle_in(tx, WALLET, order_id, how, now).await,
    }
}

/// Moves each of `held` inside the outcome's transaction, in reservation order (stock, coupon,
/// points, wallet) whatever the move. Every transaction that touches several resources locks
/// their rows in that one order, so a cancel releasing points and stock cannot deadlock with a
/// new order reserving stock and then points (releases once ran in reverse, and on PostgreSQL
/// under load they did: `bench/`, README "Dispatch latency").
async fn settle_each(
    tx: &mut Tx<'_>,
    order_id: &str,
    held: &[Resource],
    how: Move,
    now: i64,
) -> Result<(), StoreError> {
    let mut ordered = held.to_vec();
    ordered.sort(); // `Resource` orders as `Resource::ALL`: the reservation order.
    for resource in ordered {
        settle(tx, order_id, resource, how, now).await?;
    }
    Ok(())
}

/// Paid: the status, the payment and every capture, together.
pub async fn pay(db: &Db, input: &PayOrder) -> Result<(), StoreError> {
    let order_id = input.paid.order_id.as_str();
    let mut tx = db.begin().await?;
    orders::mark_paid_in(&mut tx, &input.paid).await?;
    settle_each(
        &mut tx,
        order_id,
        &input.held,
        Move::Capture,
        input.paid.at_ms,
    )
    .await?;
    crate::faults::point("capture.before_commit", order_id, None);
    tx.commit().await?;
    Ok(())
}

/// Cancelled before payment: the status first (no payment can apply from here on), then every
/// release, together.
pub async fn cancel(db: &Db, input: &CancelOrder) -> Result<(), StoreError> {
    let order_id = input.cancel.order_id.as_str();
    let mut tx = db.begin().await?;
    orders::mark_cancelled_in(&mut tx, &input.cancel).await?;
    settle_each(
        &mut tx,
        order_id,
        &input.held,
        Move::Release,
        input.cancel.at_ms,
    )
    .await?;
    crate::faults::point("release.before_commit", order_id, None);
    tx.commit().await?;
    Ok(())
}

/// Cancelled after payment: the status, the payment owed back and everything the order spent
/// returned (the wallet with the status, as before, and now stock, coupon and points too).
pub async fn cancel_paid(db: &Db, input: &CancelOrder) -> Result<(), StoreError> {
    let order_id = input.cancel.order_id.as_str();
    let mut tx = db.begin().await?;
    fulfilment::cancel_after_payment_in(&mut tx, &input.cancel).await?;
    // Whole undoing would give back again what a partial refund gave (the API refuses such a
    // cancel; this closes the race with a refund asked for at the same moment).
    if crate::order_refunds::partial_refunds_of(&mut *tx, order_id).await? > 0 {
        return Err(crate::StoreError::conflict(
            order_id,
            "order_partially_refunded",
            "the order has partial refunds: refund or return the rest instead of cancelling it",
        ));
    }
    // The wallet returned with the status, in `cancel_after_payment_in`.
    let rest: Vec<Resource> = input
        .held
        .iter()
        .copied()
        .filter(|r| *r != Resource::Wallet)
        .collect();
    settle_each(&mut tx, order_id, &rest, Move::Return, input.cancel.at_ms).await?;
    crate::faults::point("return.before_commit", order_id, None);
    tx.commit().await?;
    Ok(())
}
