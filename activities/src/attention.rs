//! Orders that stopped on a permanent error and wait for ops (`needs_attention`).
//!
//! A constraint violation or unreadable data in a step that moves money or holds is not retried:
//! the same statement on the same data fails again. The order's workflow rolls the step back
//! (one transaction per outcome), raises the order here and waits for ops, who fix the cause and
//! ask for a retry (`POST /v1/admin/orders/{order_id}/retry`). The row feeds the audit, the
//! metric and the order's events; nothing here ever changes an order's status or its money.

use crate::error::{Entity, StoreError};
use crate::{Db, orders};
use orderflow_workflows::model::{AttentionResolved, NeedsAttention};
use sqlx::Row;

/// An order waiting for ops, as the audit and the order view show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Attention {
    pub order_id: String,
    /// The failure's stable code: `constraint_violation`, `data_error`, ...
    pub code: String,
    pub message: String,
    /// How many times the order stopped here (a retry that stops again counts again).
    pub raised: i64,
    pub raised_at: i64,
}

/// Raises (or raises again) an order: the row and an order event `needs_attention:<n>` whose
/// reason is the code, in one transaction. Idempotent for a retried activity: the same
/// `at_ms` does not count twice.
pub async fn raise(db: &Db, input: &NeedsAttention) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO needs_attention (order_id, code, message, raised, raised_at, resolved_at)
         VALUES ($1, $2, $3, 1, $4, NULL)
         ON CONFLICT (order_id) DO UPDATE SET code = excluded.code, message = excluded.message,
             raised = needs_attention.raised
                 + CASE WHEN needs_attention.raised_at = excluded.raised_at THEN 0 ELSE 1 END,
             raised_at = excluded.raised_at, resolved_at = NULL",
    )
    .bind(&input.order_id)
    .bind(&input.code)
    .bind(&input.message)
    .bind(input.at_ms)
    .execute(&mut *tx)
    .await?;
    let raised: i64 = sqlx::query_scalar("SELECT raised FROM needs_attention WHERE order_id = $1")
        .bind(&input.order_id)
        .fetch_one(&mut *tx)
        .await?;
    let key = format!("needs_attention:{raised}");
    orders::append_event_if_order(
        &mut tx,
        &input.order_id,
        key,
        Some(&input.code),
        None,
        input.at_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ops asked for a retry: the row is resolved and the order gets an event
/// `attention_resolved:<n>`. Idempotent.
pub async fn resolve(db: &Db, input: &AttentionResolved) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let raised: Option<i64> =
        sqlx::query_scalar("SELECT raised FROM needs_attention WHERE order_id = $1")
            .bind(&input.order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(raised) = raised else {
        return Err(StoreError::not_found(Entity::AttentionRow, &input.order_id));
    };
    sqlx::query(
        "UPDATE needs_attention SET resolved_at = $2 WHERE order_id = $1 AND resolved_at IS NULL",
    )
    .bind(&input.order_id)
    .bind(input.at_ms)
    .execute(&mut *tx)
    .await?;
    let key = format!("attention_resolved:{raised}");
    orders::append_event_if_order(
        &mut tx,
        &input.order_id,
        key,
        Some("retry"),
        None,
        input.at_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The open rows, as [`attention_of`] reads them.
const OPEN: &str = "SELECT order_id, code, message, raised, raised_at FROM needs_attention
     WHERE resolved_at IS NULL";

/// The open rows: orders waiting for ops, oldest first.
pub async fn open(db: &Db) -> Result<Vec<Attention>, sqlx::Error> {
    let sql = format!("{OPEN} ORDER BY raised_at, order_id");
    Ok(sqlx::query(&sql)
        .fetch_all(db)
        .await?
        .iter()
        .map(attention_of)
        .collect())
}

/// The open row of one order, if it waits for ops.
pub async fn of_order(db: &Db, order_id: &str) -> Result<Option<Attention>, sqlx::Error> {
    let sql = format!("{OPEN} AND order_id = $1");
    Ok(sqlx::query(&sql)
        .bind(order_id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(attention_of))
}

fn attention_of(r: &sqlx::any::AnyRow) -> Attention {
    Attention {
        order_id: r.get(0),
        code: r.get(1),
        message: r.get(2),
        raised: r.get(3),
        raised_at: r.get(4),
    }
}
