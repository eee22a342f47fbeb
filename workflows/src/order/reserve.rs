//! Step 1 of an order: the reservations, the order row, and a rejection.
//!
//! `held` names every resource the order may hold *before* a reservation is tried, so that a
//! refusal (or a reservation that could not run) releases every one of them, tombstoning any
//! that the activity had not reached. Never moves a hold except through [`settle`].

use super::{OrderWorkflow, at_rest};
use crate::contract::OrderActivities;
use crate::decide;
use crate::model::*;
use crate::policy::{DbStep, db_step, now_ms};
use temporalio_sdk::{ActivityExecutionError, WorkflowContext, WorkflowResult};

/// The patch under which an order reserves everything in one activity and one transaction
/// (`order.reserve`, issue 12). Histories recorded before it replay one activity per resource.
pub const RESERVE_IN_ONE_TRANSACTION: &str = "reserve-in-one-transaction";

/// A reservation activity that could not run (retries exhausted) is a refusal too: the order is
/// rejected and everything attempted is released.
fn unavailable(e: ActivityExecutionError) -> Refusal {
    Refusal::new(
        "reservation_unavailable",
        format!("a reservation could not be made: {e}"),
    )
}

fn reservation(result: Result<Reservation, ActivityExecutionError>) -> Result<i64, Refusal> {
    match result {
        Ok(Reservation::Reserved { amount }) => Ok(amount),
        Ok(Reservation::Refused(refusal)) => Err(refusal),
        Err(e) => Err(unavailable(e)),
    }
}

/// Holds stock (pricing the order), then the coupon, points and wallet, in that order: in one
/// transaction, or (runs recorded before [`RESERVE_IN_ONE_TRANSACTION`]) one by one.
pub(super) async fn reserve_all(
    ctx: &WorkflowContext<OrderWorkflow>,
    input: &PlaceOrder,
    held: &mut Vec<Resource>,
) -> Result<Amounts, Refusal> {
    if ctx.patched(RESERVE_IN_ONE_TRANSACTION) {
        return reserve_at_once(ctx, input, held).await;
    }
    reserve_one_by_one(ctx, input, held).await
}

/// Every hold in one step. Until it answers, `held` is everything the order may hold, so that
/// a reservation that could not run, or a refusal, releases all of it, and tombstones what it
/// never reached (a late commit of the reservation then finds the order closed). Once
/// reserved, `held` is exactly what the amounts hold.
async fn reserve_at_once(
    ctx: &WorkflowContext<OrderWorkflow>,
    input: &PlaceOrder,
    held: &mut Vec<Resource>,
) -> Result<Amounts, Refusal> {
    *held = decide::may_hold(input);
    let req = ReserveOrder::of(input);
    match db_step(ctx, OrderActivities::reserve_order, req, DbStep::Reserve).await {
        Ok(OrderReservation::Reserved(amounts)) => {
            *held = decide::held(input.coupon_id.is_some(), &amounts);
            Ok(amounts)
        }
        Ok(OrderReservation::Refused(refusal)) => Err(refusal),
        Err(e) => Err(unavailable(e)),
    }
}

/// One activity per resource, as orders started before [`RESERVE_IN_ONE_TRANSACTION`] ran.
/// Each resource is pushed onto `held` before its reservation is tried.
async fn reserve_one_by_one(
    ctx: &WorkflowContext<OrderWorkflow>,
    input: &PlaceOrder,
    held: &mut Vec<Resource>,
) -> Result<Amounts, Refusal> {
    let order_id = input.order_id.clone();
    held.push(Resource::Stock);
    let stock = ReserveStock {
        order_id: order_id.clone(),
        items: input.items.clone(),
        user_id: input.user_id.clone(),
        max_open_orders: input.max_open_orders,
    };
    let total =
        reservation(db_step(ctx, OrderActivities::reserve_stock, stock, DbStep::Reserve).await)?;

    let mut coupon = 0;
    if let Some(coupon_id) = &input.coupon_id {
        held.push(Resource::Coupon);
        let req = ReserveCoupon {
            order_id: order_id.clone(),
            user_id: input.user_id.clone(),
            coupon_id: coupon_id.clone(),
            max_discount: decide::coupon_cap(total),
        };
        coupon =
            reservation(db_step(ctx, OrderActivities::reserve_coupon, req, DbStep::Reserve).await)?;
    }
    let amounts = decide::price_order(
        input.payment_method,
        total,
        coupon,
        input.points,
        input.wallet_amount,
    )?;

    let funds = |amount| ReserveFunds {
        order_id: order_id.clone(),
        user_id: input.user_id.clone(),
        amount,
    };
    if amounts.points > 0 {
        held.push(Resource::Points);
        reservation(
            db_step(
                ctx,
                OrderActivities::reserve_points,
                funds(amounts.points),
                DbStep::Reserve,
            )
            .await,
        )?;
    }
    if amounts.wallet > 0 {
        held.push(Resource::Wallet);
        reservation(
            db_step(
                ctx,
                OrderActivities::reserve_wallet,
                funds(amounts.wallet),
                DbStep::Reserve,
            )
            .await,
        )?;
    }
    Ok(amounts)
}

/// Records the order row (idempotent on the order id).
pub(super) async fn record_order(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
    amounts: Amounts,
    expires_at_ms: Option<i64>,
    rejection: Option<Refusal>,
) -> WorkflowResult<()> {
    let order = ctx.state(|s| s.input.clone());
    let input = RecordOrder {
        order,
        status,
        amounts,
        expires_at_ms,
        rejection,
        at_ms: now_ms(ctx)?,
    };
    db_step(ctx, OrderActivities::record_order, input, DbStep::Settle).await?;
    Ok(())
}

/// A refused reservation: everything attempted is released, and the order is recorded
/// `rejected` with the refusal's code. It then rests (no grace window: nothing was payable).
pub(super) async fn reject(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    refusal: Refusal,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    settle(ctx, &order_id, held, Move::Release).await?;
    record_order(
        ctx,
        OrderStatus::Rejected,
        Amounts::default(),
        None,
        Some(refusal.clone()),
    )
    .await?;
    ctx.state_mut(|s| s.rejection = Some(refusal));
    at_rest(ctx, OrderStatus::Rejected, now_ms(ctx)?, false);
    Ok(())
}

/// Moves every hold in `held` (in reservation order, whatever the move) in one
/// transaction: the one activity for hold moves outside an outcome (a rejection, a resumed
/// paid order's captures, reconciliation's releases of orphan holds).
pub(crate) async fn settle<W>(
    ctx: &WorkflowContext<W>,
    order_id: &str,
    held: &[Resource],
    how: Move,
) -> WorkflowResult<()> {
    let input = SettleHolds {
        order_id: order_id.to_owned(),
        held: held.to_vec(),
        how,
    };
    db_step(ctx, OrderActivities::settle_holds, input, DbStep::Settle).await?;
    Ok(())
}
