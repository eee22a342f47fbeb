//! Redemption codes: `{code, sku, max_uses}`, redeemed for an entitlement.
//!
//! One transaction per redemption: the `(code, user)` row, the code's `used_count` (a
//! conditional update, and a CHECK, so `max_uses` is never exceeded), the quota and the
//! entitlement change together or not at all. A user's second redemption of a code finds the
//! first and answers it again: a retry never grants twice. Refusals roll everything back.

use crate::error::{Entity, StoreError};
use crate::{Db, quota};
use orderflow_workflows::model::{RedeemCode, RedemptionOutcome, Refusal};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub code: String,
    pub sku: String,
    pub max_uses: i64,
    pub used_count: i64,
}

/// Creates a code for a digital SKU.
pub async fn create_code(
    db: &Db,
    code: &str,
    sku: &str,
    max_uses: i64,
    at: i64,
) -> Result<Code, StoreError> {
    let kind: Option<String> = sqlx::query("SELECT kind FROM skus WHERE sku = $1")
        .bind(sku)
        .fetch_optional(db)
        .await?
        .map(|r| r.get(0));
    match kind.as_deref() {
        Some("digital") => {}
        Some(_) => {
            return Err(StoreError::Invalid {
                code: "sku_not_digital",
                message: format!("SKU {sku} is physical; codes grant digital goods"),
            });
        }
        None => return Err(StoreError::not_found(Entity::Sku, sku)),
    }
    let inserted = sqlx::query(
        "INSERT INTO redemption_codes (code, sku, max_uses, used_count, created_at) VALUES ($1, $2, $3, 0, $4)
         ON CONFLICT (code) DO NOTHING",
    )
    .bind(code)
    .bind(sku)
    .bind(max_uses)
    .bind(at)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Invalid {
            code: "code_exists",
            message: format!("code {code} already exists"),
        });
    }
    get_code(db, code).await
}

pub async fn get_code(db: &Db, code: &str) -> Result<Code, StoreError> {
    let r =
        sqlx::query("SELECT code, sku, max_uses, used_count FROM redemption_codes WHERE code = $1")
            .bind(code)
            .fetch_optional(db)
            .await?
            .ok_or_else(|| StoreError::not_found(Entity::Code, code))?;
    Ok(Code {
        code: r.get(0),
        sku: r.get(1),
        max_uses: r.get(2),
        used_count: r.get(3),
    })
}

/// Redeems `code` for `user_id`, at most once.
pub async fn redeem(db: &Db, input: &RedeemCode, at: i64) -> Result<RedemptionOutcome, StoreError> {
    let entitlement_id = format!("red:{}:{}", input.code, input.user_id);
    let mut tx = db.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO redemptions (code, user_id, entitlement_id, redeemed_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (code, user_id) DO NOTHING",
    )
    .bind(&input.code)
    .bind(&input.user_id)
    .bind(&entitlement_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        // Redeemed before: the same answer again.
        let r = sqlx::query(
            "SELECT r.entitlement_id, r.redeemed_at, c.sku FROM redemptions r
             JOIN redemption_codes c ON c.code = r.code WHERE r.code = $1 AND r.user_id = $2",
        )
        .bind(&input.code)
        .bind(&input.user_id)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(RedemptionOutcome::Granted {
            entitlement_id: r.get(0),
            redeemed_at_ms: r.get(1),
            sku: r.get(2),
        });
    }
    let used = sqlx::query(
        "UPDATE redemption_codes SET used_count = used_count + 1 WHERE code = $1 AND used_count < max_uses",
    )
    .bind(&input.code)
    .execute(&mut *tx)
    .await?;
    let sku: Option<String> = sqlx::query("SELECT sku FROM redemption_codes WHERE code = $1")
        .bind(&input.code)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
    let Some(sku) = sku else {
        return Ok(RedemptionOutcome::Refused(Refusal::new(
            "unknown_code",
            format!("code {} does not exist", input.code),
        )));
    };
    if used.rows_affected() != 1 {
        return Ok(RedemptionOutcome::Refused(Refusal::new(
            "code_exhausted",
            format!("code {} has been used as often as it may be", input.code),
        )));
    }
    let quota_units = match quota::take(&mut tx, &input.user_id, &sku, 1).await? {
        Ok(units) => units,
        Err(refusal) => return Ok(RedemptionOutcome::Refused(refusal)),
    };
    sqlx::query("UPDATE redemptions SET quota_units = $3 WHERE code = $1 AND user_id = $2")
        .bind(&input.code)
        .bind(&input.user_id)
        .bind(quota_units)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO entitlements (entitlement_id, user_id, sku, quantity, source, source_id, status, granted_at)
         VALUES ($1, $2, $3, 1, 'redemption', $4, 'active', $5)",
    )
    .bind(&entitlement_id)
    .bind(&input.user_id)
    .bind(&sku)
    .bind(&input.code)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RedemptionOutcome::Granted {
        entitlement_id,
        sku,
        redeemed_at_ms: at,
    })
}

/// Active entitlements of a user.
pub async fn entitlements(
    db: &Db,
    user_id: &str,
) -> Result<Vec<(String, String, i64, String)>, StoreError> {
    Ok(sqlx::query(
        "SELECT entitlement_id, sku, quantity, source FROM entitlements
         WHERE user_id = $1 AND status = 'active' ORDER BY granted_at, entitlement_id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect())
}
