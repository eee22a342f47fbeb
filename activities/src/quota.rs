//! Quotas: per user and SKU, the units in open orders plus active entitlements never exceed the
//! SKU's `quota` (for example one active subscription).
//!
//! `quota_usage.used` moves in the same transaction as what causes it, with a conditional
//! update against the quota, so concurrent orders and redemptions of one user serialise on the
//! row and cannot both take the last slot. The API's check is only a fast, clear answer; this
//! is the one that holds. Never called outside a transaction.

use crate::error::StoreError;
use crate::holds::Tx;
use orderflow_workflows::model::Refusal;
use sqlx::Row;

/// The SKU's quota, if it has one.
pub(crate) async fn quota_of(tx: &mut Tx<'_>, sku: &str) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT quota FROM skus WHERE sku = $1")
        .bind(sku)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.and_then(|r| r.get::<Option<i64>, _>(0)))
}

fn exceeded(user_id: &str, sku: &str, quota: i64) -> Refusal {
    Refusal::new(
        "quota_exceeded",
        format!(
            "{user_id} may hold at most {quota} of {sku} at once (open orders and active entitlements)"
        ),
    )
}

/// Takes `units` of the user's quota for `sku`. `Ok(0)` if the SKU has no quota (nothing
/// taken), `Ok(units)` if taken, a refusal if it would exceed the quota.
pub(crate) async fn take(
    tx: &mut Tx<'_>,
    user_id: &str,
    sku: &str,
    units: i64,
) -> Result<Result<i64, Refusal>, StoreError> {
    let Some(quota) = quota_of(tx, sku).await? else {
        return Ok(Ok(0));
    };
    if user_id.is_empty() {
        return Ok(Ok(0));
    }
    sqlx::query(
        "INSERT INTO quota_usage (user_id, sku, used) VALUES ($1, $2, 0) ON CONFLICT (user_id, sku) DO NOTHING",
    )
    .bind(user_id)
    .bind(sku)
    .execute(&mut **tx)
    .await?;
    let taken = sqlx::query(
        "UPDATE quota_usage SET used = used + $3 WHERE user_id = $1 AND sku = $2 AND used + $3 <= $4",
    )
    .bind(user_id)
    .bind(sku)
    .bind(units)
    .bind(quota)
    .execute(&mut **tx)
    .await?;
    Ok(if taken.rows_affected() == 1 {
        Ok(units)
    } else {
        Err(exceeded(user_id, sku, quota))
    })
}

/// Gives back `units` taken earlier (recorded where they were taken, so never more).
pub(crate) async fn free(
    tx: &mut Tx<'_>,
    user_id: &str,
    sku: &str,
    units: i64,
) -> Result<(), StoreError> {
    if units == 0 {
        return Ok(());
    }
    let freed = sqlx::query(
        "UPDATE quota_usage SET used = used - $3 WHERE user_id = $1 AND sku = $2 AND used >= $3",
    )
    .bind(user_id)
    .bind(sku)
    .bind(units)
    .execute(&mut **tx)
    .await?;
    crate::holds::expect_one(freed.rows_affected(), user_id, "quota_mismatch", || {
        format!("{user_id}: fewer than {units} of {sku} counted against the quota")
    })
}

/// The final safeguard at fulfilment: the user's usage must still be within the quota (an
/// admin may have lowered it since the order was placed).
pub(crate) async fn still_within(
    tx: &mut Tx<'_>,
    user_id: &str,
    sku: &str,
) -> Result<Result<(), Refusal>, StoreError> {
    let Some(quota) = quota_of(tx, sku).await? else {
        return Ok(Ok(()));
    };
    let used: i64 = sqlx::query("SELECT used FROM quota_usage WHERE user_id = $1 AND sku = $2")
        .bind(user_id)
        .bind(sku)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    Ok(if used <= quota {
        Ok(())
    } else {
        Err(exceeded(user_id, sku, quota))
    })
}

/// For the API's early answer: `(used, quota)` of a user and SKU, if the SKU has a quota.
pub async fn usage(
    db: &crate::Db,
    user_id: &str,
    sku: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT s.quota, COALESCE(q.used, 0) FROM skus s
         LEFT JOIN quota_usage q ON q.sku = s.sku AND q.user_id = $1 WHERE s.sku = $2",
    )
    .bind(user_id)
    .bind(sku)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| r.get::<Option<i64>, _>(0).map(|quota| (r.get(1), quota))))
}
