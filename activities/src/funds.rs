//! Points and wallet holds: the same movement on two kinds of account.
//!
//! `balance + held + spent = credited` per account (a CHECK constraint). Reservation moves
//! balance to held (wallet: `frozen`, points: `reserved`), release moves it back, capture
//! moves it to `spent`. SQL is assembled only from the static names in [`Account`].

use crate::error::StoreError;
use crate::holds::{self, Begin, Move, Tx};
use crate::{Db, now_ms};
use orderflow_workflows::model::{Refusal, Reservation, ReserveFunds};

pub use orderflow_store::funds::{Account, POINTS, WALLET};

pub async fn reserve(
    db: &Db,
    account: Account,
    input: &ReserveFunds,
) -> Result<Reservation, StoreError> {
    let mut tx = db.begin().await?;
    let reserved = reserve_in(&mut tx, account, input, now_ms()).await?;
    holds::commit_reserved(tx, reserved).await
}

/// [`reserve`] inside the caller's transaction, which the caller commits only if it reserved.
pub(crate) async fn reserve_in(
    tx: &mut Tx<'_>,
    account: Account,
    input: &ReserveFunds,
    now: i64,
) -> Result<Reservation, StoreError> {
    let order_id = input.order_id.as_str();
    match holds::begin_reserve(tx, order_id, account.resource, &input.user_id, now).await? {
        Begin::Existing(hold) => {
            let replay = Reservation::Reserved {
                amount: hold.amount,
            };
            return Ok(hold.closed().unwrap_or(replay));
        }
        Begin::Fresh => {}
    }
    let sql = format!(
        "UPDATE {t} SET balance = balance - $2, {h} = {h} + $2, updated_at = $3 WHERE user_id = $1 AND balance >= $2",
        t = account.table,
        h = account.held
    );
    let taken = sqlx::query(&sql)
        .bind(&input.user_id)
        .bind(input.amount)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    if taken.rows_affected() != 1 {
        return Ok(Reservation::Refused(Refusal::new(
            account.short_code,
            format!(
                "{} requested {} of {}, which is more than available",
                input.user_id, input.amount, account.noun
            ),
        )));
    }
    holds::finish_reserve(tx, order_id, account.resource, input.amount, now).await?;
    Ok(Reservation::Reserved {
        amount: input.amount,
    })
}

/// Moves a points or wallet hold inside the caller's transaction (see `outcome`).
pub(crate) async fn settle_in(
    tx: &mut Tx<'_>,
    account: Account,
    order_id: &str,
    how: Move,
    now: i64,
) -> Result<(), StoreError> {
    let hold = holds::begin(tx, order_id, account.resource, how, now).await?;
    if let Some(hold) = hold {
        let (to, from) = match how {
            Move::Release => ("balance", account.held),
            Move::Capture => ("spent", account.held),
            Move::Return => ("balance", "spent"),
        };
        let sql = format!(
            "UPDATE {t} SET {to} = {to} + $2, {from} = {from} - $2, updated_at = $3 WHERE user_id = $1 AND {from} >= $2",
            t = account.table,
        );
        let moved = sqlx::query(&sql)
            .bind(&hold.subject)
            .bind(hold.amount)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        holds::expect_one(moved.rows_affected(), order_id, "funds_mismatch", || {
            format!(
                "{} of {}: less than {} {from}, or the account is gone",
                account.noun, hold.subject, hold.amount
            )
        })?;
    }
    Ok(())
}
