//! Stock holds. `available + reserved + sold` is constant per SKU: reservation moves quantity
//! from available to reserved, release moves it back, capture moves it to sold, and a return
//! (cancel after payment) moves sold back to available. Lines of quota'd SKUs take the user's
//! quota in the same transaction, and give it back on release and return. The lines and
//! their unit prices are written to `order_items` with the reservation.

use crate::error::StoreError;
use crate::holds::{self, Begin, Move};
use crate::{Db, now_ms};
use orderflow_workflows::model::{OrderLine, Refusal, Reservation, ReserveStock, Resource};
use sqlx::Row;

/// Reserves every line, all or nothing, and returns the total price.
pub async fn reserve(db: &Db, input: &ReserveStock) -> Result<Reservation, StoreError> {
    let mut tx = db.begin().await?;
    let reserved = reserve_in(&mut tx, input, now_ms()).await?;
    holds::commit_reserved(tx, reserved).await
}

/// [`reserve`] inside the caller's transaction, which the caller commits only if it reserved.
pub(crate) async fn reserve_in(
    tx: &mut holds::Tx<'_>,
    input: &ReserveStock,
    now: i64,
) -> Result<Reservation, StoreError> {
    let order_id = input.order_id.as_str();
    // The stock hold's subject is the user whose quota the lines count against.
    match holds::begin_reserve(tx, order_id, Resource::Stock, &input.user_id, now).await? {
        Begin::Existing(hold) => {
            let replay = Reservation::Reserved {
                amount: hold.amount,
            };
            return Ok(hold.closed().unwrap_or(replay));
        }
        Begin::Fresh => {}
    }
    if let Some(cap) = input.max_open_orders
        && let Some(refusal) = over_open_order_cap(tx, input, cap).await?
    {
        return Ok(Reservation::Refused(refusal));
    }
    // Lock SKU rows in one global order so that concurrent orders cannot deadlock.
    let mut lines: Vec<&OrderLine> = input.items.iter().collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut total: i64 = 0;
    for line in lines {
        let taken = sqlx::query(
            "UPDATE skus SET available = available - $2, reserved = reserved + $2, updated_at = $3
             WHERE sku = $1 AND available >= $2",
        )
        .bind(&line.sku)
        .bind(line.quantity)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let row = sqlx::query("SELECT price, available FROM skus WHERE sku = $1")
            .bind(&line.sku)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Ok(Reservation::Refused(Refusal::new(
                "unknown_sku",
                format!("SKU {} does not exist", line.sku),
            )));
        };
        if taken.rows_affected() != 1 {
            let available: i64 = row.get(1);
            return Ok(Reservation::Refused(Refusal::new(
                "insufficient_stock",
                format!(
                    "SKU {}: {} requested, {available} available",
                    line.sku, line.quantity
                ),
            )));
        }
        let price: i64 = row.get(0);
        let Some(next) = price
            .checked_mul(line.quantity)
            .and_then(|line_total| total.checked_add(line_total))
        else {
            return Ok(Reservation::Refused(Refusal::new(
                "amount_too_large",
                "the order total overflows",
            )));
        };
        total = next;
        let quota_units =
            match crate::quota::take(tx, &input.user_id, &line.sku, line.quantity).await? {
                Ok(units) => units,
                Err(refusal) => return Ok(Reservation::Refused(refusal)),
            };
        let item = sqlx::query(
            "INSERT INTO order_items (order_id, sku, quantity, unit_price, quota_units) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_id)
        .bind(&line.sku)
        .bind(line.quantity)
        .bind(price)
        .bind(quota_units)
        .execute(&mut **tx)
        .await?;
        holds::expect_one(item.rows_affected(), order_id, "ledger_mismatch", || {
            format!("order item {} not written", line.sku)
        })?;
    }
    holds::finish_reserve(tx, order_id, Resource::Stock, total, now).await?;
    Ok(Reservation::Reserved { amount: total })
}

/// The open-order cap, exactly: concurrent reservations of one user serialise on their
/// `user_locks` row (SQLite already serialises every write transaction), then count the
/// user's other stock holds still `reserved` (orders not yet paid or released).
async fn over_open_order_cap(
    tx: &mut holds::Tx<'_>,
    input: &ReserveStock,
    cap: i64,
) -> Result<Option<Refusal>, StoreError> {
    sqlx::query(
        "INSERT INTO user_locks (user_id) VALUES ($1)
         ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id",
    )
    .bind(&input.user_id)
    .execute(&mut **tx)
    .await?;
    let open: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM holds WHERE resource = 'stock' AND subject = $1 AND state = 'reserved' AND order_id <> $2",
    )
    .bind(&input.user_id)
    .bind(&input.order_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((open >= cap).then(|| {
        Refusal::new(
            "too_many_open_orders",
            format!(
                "{} has {open} unpaid orders; pay or cancel one first (at most {cap})",
                input.user_id
            ),
        )
    }))
}

/// How a settled hold moves each line's quantity.
fn line_sql(how: Move) -> &'static str {
    match how {
        Move::Release => {
            "UPDATE skus SET available = available + $2, reserved = reserved - $2, updated_at = $3 WHERE sku = $1 AND reserved >= $2"
        }
        Move::Capture => {
            "UPDATE skus SET sold = sold + $2, reserved = reserved - $2, updated_at = $3 WHERE sku = $1 AND reserved >= $2"
        }
        Move::Return => {
            "UPDATE skus SET available = available + $2, sold = sold - $2, updated_at = $3 WHERE sku = $1 AND sold >= $2"
        }
    }
}

/// Moves the stock hold inside the caller's transaction (see `outcome`).
pub(crate) async fn settle_in(
    tx: &mut holds::Tx<'_>,
    order_id: &str,
    how: Move,
    now: i64,
) -> Result<(), StoreError> {
    let hold = holds::begin(tx, order_id, Resource::Stock, how, now).await?;
    if let Some(hold) = hold {
        let lines = sqlx::query(
            "SELECT sku, quantity, quota_units FROM order_items WHERE order_id = $1 ORDER BY sku",
        )
        .bind(order_id)
        .fetch_all(&mut **tx)
        .await?;
        if lines.is_empty() {
            return Err(StoreError::conflict(
                order_id,
                "ledger_mismatch",
                "stock hold without order items",
            ));
        }
        for line in lines {
            let sku: String = line.get(0);
            let quantity: i64 = line.get(1);
            let quota_units: i64 = line.get(2);
            let moved = sqlx::query(line_sql(how))
                .bind(&sku)
                .bind(quantity)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            holds::expect_one(moved.rows_affected(), order_id, "stock_mismatch", || {
                format!("SKU {sku}: fewer than {quantity} held, or the SKU is gone")
            })?;
            // Capture keeps the quota slot (it becomes the entitlement); the others free it.
            if how != Move::Capture {
                crate::quota::free(tx, &hold.subject, &sku, quota_units).await?;
            }
        }
    }
    Ok(())
}
