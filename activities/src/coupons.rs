//! Coupon holds. `balance + reserved + used = amount` for every coupon (a CHECK constraint).
//!
//! An `amount` coupon holds `min(balance, what the order still owes)` and can be used in parts.
//! A `discount` coupon is single-use: it moves whole, and applies at most the order total.
//! A release restores the held value whatever the coupon's state: there is no status filter
//! to miss (the `WHERE status = 4` bug of the seeds).

use crate::error::StoreError;
use crate::holds::{self, Begin, Move};
use crate::{Db, now_ms};
use orderflow_workflows::model::{Refusal, Reservation, ReserveCoupon, Resource};
use sqlx::Row;

/// How much a coupon moves (`held`) and how much it takes off the order (`discount`).
fn split(kind: &str, amount: i64, balance: i64, max_discount: i64) -> (i64, i64) {
    if kind == "discount" {
        (balance, amount.min(max_discount))
    } else {
        let take = balance.min(max_discount);
        (take, take)
    }
}

pub async fn reserve(db: &Db, input: &ReserveCoupon) -> Result<Reservation, StoreError> {
    let mut tx = db.begin().await?;
    let reserved = reserve_in(&mut tx, input, now_ms()).await?;
    holds::commit_reserved(tx, reserved).await
}

/// [`reserve`] inside the caller's transaction, which the caller commits only if it reserved.
pub(crate) async fn reserve_in(
    tx: &mut holds::Tx<'_>,
    input: &ReserveCoupon,
    now: i64,
) -> Result<Reservation, StoreError> {
    let order_id = input.order_id.as_str();
    let unusable = |why: &str| {
        Ok(Reservation::Refused(Refusal::new(
            "coupon_unusable",
            format!("coupon {}: {why}", input.coupon_id),
        )))
    };
    let begin = holds::begin_reserve(tx, order_id, Resource::Coupon, &input.coupon_id, now).await?;
    if let Some(closed) = match &begin {
        Begin::Existing(hold) => hold.closed(),
        Begin::Fresh => None,
    } {
        return Ok(closed);
    }
    // An update conditioned on the balance just read: under PostgreSQL a concurrent order may
    // change it in between, and then the read is simply repeated.
    for _ in 0..5 {
        let row =
            sqlx::query("SELECT user_id, kind, amount, balance FROM coupons WHERE coupon_id = $1")
                .bind(&input.coupon_id)
                .fetch_optional(&mut **tx)
                .await?;
        let Some(row) = row else {
            return unusable("does not exist");
        };
        let (owner, kind, amount, balance): (String, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if let Begin::Existing(hold) = &begin {
            // A retry of a reservation that committed: answer what it reserved.
            let discount = if kind == "discount" {
                amount.min(input.max_discount)
            } else {
                hold.amount
            };
            return Ok(Reservation::Reserved { amount: discount });
        }
        if owner != input.user_id {
            return unusable("belongs to another user");
        }
        let (held, discount) = split(&kind, amount, balance, input.max_discount);
        if held <= 0 || discount <= 0 {
            return unusable(if balance == 0 {
                "has no balance left"
            } else {
                "has nothing to discount"
            });
        }
        let taken = sqlx::query(
            "UPDATE coupons SET balance = balance - $2, reserved = reserved + $2 WHERE coupon_id = $1 AND balance = $3",
        )
        .bind(&input.coupon_id)
        .bind(held)
        .bind(balance)
        .execute(&mut **tx)
        .await?;
        if taken.rows_affected() == 1 {
            holds::finish_reserve(tx, order_id, Resource::Coupon, held, now).await?;
            return Ok(Reservation::Reserved { amount: discount });
        }
    }
    Err(StoreError::Busy(format!(
        "coupon {} changed under every attempt",
        input.coupon_id
    )))
}

fn settle_sql(how: Move) -> &'static str {
    match how {
        Move::Release => {
            "UPDATE coupons SET balance = balance + $2, reserved = reserved - $2 WHERE coupon_id = $1 AND reserved >= $2"
        }
        Move::Capture => {
            "UPDATE coupons SET used = used + $2, reserved = reserved - $2 WHERE coupon_id = $1 AND reserved >= $2"
        }
        Move::Return => {
            "UPDATE coupons SET balance = balance + $2, used = used - $2 WHERE coupon_id = $1 AND used >= $2"
        }
    }
}

/// Moves the coupon hold inside the caller's transaction (see `outcome`).
pub(crate) async fn settle_in(
    tx: &mut holds::Tx<'_>,
    order_id: &str,
    how: Move,
    now: i64,
) -> Result<(), StoreError> {
    let hold = holds::begin(tx, order_id, Resource::Coupon, how, now).await?;
    if let Some(hold) = hold {
        let moved = sqlx::query(settle_sql(how))
            .bind(&hold.subject)
            .bind(hold.amount)
            .execute(&mut **tx)
            .await?;
        holds::expect_one(moved.rows_affected(), order_id, "coupon_mismatch", || {
            format!(
                "coupon {}: less than {} held, or the coupon is gone",
                hold.subject, hold.amount
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn an_amount_coupon_holds_only_what_the_order_needs() {
        assert_eq!(split("amount", 5_000, 3_000, 1_200), (1_200, 1_200));
        assert_eq!(split("amount", 5_000, 300, 1_200), (300, 300));
    }

    #[test]
    fn a_discount_coupon_moves_whole_but_discounts_at_most_the_total() {
        assert_eq!(split("discount", 2_000, 2_000, 1_500), (2_000, 1_500));
        assert_eq!(split("discount", 2_000, 2_000, 9_000), (2_000, 2_000));
    }
}
