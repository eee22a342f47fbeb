//! An order's reservations in one transaction (`order.reserve`): stock, which prices the
//! order, then the coupon, points and wallet, priced by the workflow crate's `decide`
//! (`price_order`, the rule the workflow applied itself before this activity existed).
//!
//! All or nothing: a refusal of any resource rolls back every one, so a refused order holds
//! nothing and a reserved one holds all it needs. A retry after a commit whose answer was lost
//! finds every hold made and answers the same amounts (each resource replays, see `holds`); a
//! retry after the workflow tombstoned the order's holds is refused `order_closed`. Never
//! prices anything itself: the rules live in `decide`, where the workflow also reads them.

use crate::error::StoreError;
use crate::holds::{self, Tx};
use crate::{Db, coupons, funds, now_ms, stock};
use orderflow_workflows::decide;
use orderflow_workflows::model::{
    OrderReservation, Reservation, ReserveCoupon, ReserveFunds, ReserveOrder, ReserveStock,
    Resource,
};

/// What the order reserved, or the first refusal.
pub async fn reserve_order(db: &Db, input: &ReserveOrder) -> Result<OrderReservation, StoreError> {
    let mut tx = db.begin().await?;
    let reserved = reserve_in(&mut tx, input, now_ms()).await?;
    holds::keep_if(tx, matches!(reserved, OrderReservation::Reserved(_))).await?;
    Ok(reserved)
}

/// The resources a reservation of these amounts holds, in the order they were reserved (a
/// coupon, once reserved, always takes something off).
pub fn held_by(input: &ReserveOrder, reserved: &OrderReservation) -> Vec<Resource> {
    match reserved {
        OrderReservation::Reserved(amounts) => decide::held(input.coupon_id.is_some(), amounts),
        OrderReservation::Refused(_) => Vec::new(),
    }
}

async fn reserve_in(
    tx: &mut Tx<'_>,
    input: &ReserveOrder,
    now: i64,
) -> Result<OrderReservation, StoreError> {
    let order_id = &input.order_id;
    let refused = |r| Ok(OrderReservation::Refused(r));
    let stock = ReserveStock {
        order_id: order_id.clone(),
        items: input.items.clone(),
        user_id: input.user_id.clone(),
        max_open_orders: input.max_open_orders,
    };
    let total = match stock::reserve_in(tx, &stock, now).await? {
        Reservation::Reserved { amount } => amount,
        Reservation::Refused(r) => return refused(r),
    };
    let mut coupon = 0;
    if let Some(coupon_id) = &input.coupon_id {
        let req = ReserveCoupon {
            order_id: order_id.clone(),
            user_id: input.user_id.clone(),
            coupon_id: coupon_id.clone(),
            max_discount: decide::coupon_cap(total),
        };
        coupon = match coupons::reserve_in(tx, &req, now).await? {
            Reservation::Reserved { amount } => amount,
            Reservation::Refused(r) => return refused(r),
        };
    }
    let priced = decide::price_order(
        input.payment_method,
        total,
        coupon,
        input.points,
        input.wallet_amount,
    );
    let amounts = match priced {
        Ok(amounts) => amounts,
        Err(r) => return refused(r),
    };
    for (account, amount) in [
        (funds::POINTS, amounts.points),
        (funds::WALLET, amounts.wallet),
    ] {
        if amount <= 0 {
            continue;
        }
        let req = ReserveFunds {
            order_id: order_id.clone(),
            user_id: input.user_id.clone(),
            amount,
        };
        if let Reservation::Refused(r) = funds::reserve_in(tx, account, &req, now).await? {
            return refused(r);
        }
    }
    Ok(OrderReservation::Reserved(amounts))
}
