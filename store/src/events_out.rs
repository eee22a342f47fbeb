//! Events out to other services, as ops see and steer them: subscriber URLs, the outbox's
//! events and each delivery's log (`migrations/*_events_out.up.sql`).
//!
//! The API reads and writes here: register, list and disable subscribers, read the delivery
//! log, redeliver. Writing events into the outbox and delivering them is the activities'
//! (`orderflow_activities::events_out`). This module must never send anything, and never
//! mark a delivery delivered: only an answer from the subscriber does that.

use crate::{Db, Entity, StoreError, now_ms};
use sqlx::Row;

/// Every event type orderflow publishes, in lifecycle order.
pub const EVENT_TYPES: [&str; 11] = [
    "order.placed",
    "order.paid",
    "order.cancelled",
    "order.fulfilled",
    "order.disputed",
    "refund.succeeded",
    "refund.failed",
    "return.requested",
    "return.received",
    "return.refunded",
    "return.refund_failed",
];

/// A delivery's states, as the table's CHECK allows them.
pub const DELIVERY_STATES: [&str; 3] = ["pending", "delivered", "failed"];

/// The most deliveries one page of the log shows.
pub const MAX_DELIVERY_PAGE: i64 = 100;

/// A subscriber, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub subscription_id: String,
    pub url: String,
    /// The key of the `Orderflow-Signature` HMAC of every delivery.
    pub secret: String,
    pub event_types: Vec<String>,
    pub created_at: i64,
    /// Set when ops disabled it: nothing is delivered to it any more.
    pub disabled_at: Option<i64>,
}

/// One event's delivery to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    /// The event's place among its order's events, from 1.
    pub seq: i64,
    /// `pending`, `delivered` or `failed` (retries ran out; ops may redeliver).
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    /// The body every attempt sends.
    pub body: String,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: i64,
    pub at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

/// `event_types` as stored: `,a,b,` (see the migration).
fn stored_types(types: &[String]) -> String {
    format!(",{},", types.join(","))
}

fn subscription(row: &sqlx::any::AnyRow) -> Subscription {
    let types: String = row.get("event_types");
    Subscription {
        subscription_id: row.get("subscription_id"),
        url: row.get("url"),
        secret: row.get("secret"),
        event_types: types
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: row.get("created_at"),
        disabled_at: row.get("disabled_at"),
    }
}

/// Registers a subscriber of `event_types` (each one of [`EVENT_TYPES`]; the caller checks),
/// with a fresh signing secret. It gets the events written from now on.
pub async fn create_subscription(
    db: &Db,
    url: &str,
    event_types: &[String],
) -> Result<Subscription, StoreError> {
    let id = format!("sub_{}", uuid::Uuid::new_v4().simple());
    let secret = format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO event_subscriptions (subscription_id, url, secret, event_types, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(url)
    .bind(&secret)
    .bind(stored_types(event_types))
    .bind(now_ms())
    .execute(db)
    .await?;
    get_subscription(db, &id).await
}

const SUBSCRIPTION_COLUMNS: &str =
    "subscription_id, url, secret, event_types, created_at, disabled_at";

pub async fn get_subscription(db: &Db, id: &str) -> Result<Subscription, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE subscription_id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Subscription, id))?;
    Ok(subscription(&row))
}

/// Every subscriber, oldest first, disabled ones too.
pub async fn list_subscriptions(db: &Db) -> Result<Vec<Subscription>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions ORDER BY created_at, subscription_id"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(subscription).collect())
}

/// Stops deliveries to a subscriber (its pending ones stay pending, and are not sent). Doing
/// it again changes nothing.
pub async fn disable_subscription(db: &Db, id: &str) -> Result<Subscription, StoreError> {
    sqlx::query(
        "UPDATE event_subscriptions SET disabled_at = $2
         WHERE subscription_id = $1 AND disabled_at IS NULL",
    )
    .bind(id)
    .bind(now_ms())
    .execute(db)
    .await?;
    get_subscription(db, id).await
}

const DELIVERY_COLUMNS: &str = "d.event_id, e.event_type, d.order_id, d.seq, d.status, d.attempts,
    e.created_at, d.next_attempt_at, d.last_status_code, d.last_error, d.delivered_at, e.body";

fn delivery(row: &sqlx::any::AnyRow) -> Delivery {
    let status: String = row.get("status");
    let next: i64 = row.get("next_attempt_at");
    Delivery {
        event_id: row.get("event_id"),
        event_type: row.get("event_type"),
        order_id: row.get("order_id"),
        seq: row.get("seq"),
        next_attempt_at: (status == "pending").then_some(next),
        status,
        attempts: row.get("attempts"),
        created_at: row.get("created_at"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        delivered_at: row.get("delivered_at"),
        body: row.get("body"),
    }
}

/// A subscriber's deliveries, newest event first (at most `limit`).
pub async fn list_deliveries(
    db: &Db,
    subscription_id: &str,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    get_subscription(db, subscription_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM event_deliveries d
         JOIN outbox_events e ON e.event_id = d.event_id
         WHERE d.subscription_id = $1
         ORDER BY e.created_at DESC, d.order_id DESC, d.seq DESC LIMIT $2"
    ))
    .bind(subscription_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(delivery).collect())
}

/// One delivery and every attempt at it, oldest first.
pub async fn get_delivery(
    db: &Db,
    subscription_id: &str,
    event_id: &str,
) -> Result<(Delivery, Vec<Attempt>), StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM event_deliveries d
         JOIN outbox_events e ON e.event_id = d.event_id
         WHERE d.subscription_id = $1 AND d.event_id = $2"
    ))
    .bind(subscription_id)
    .bind(event_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::not_found(Entity::Delivery, event_id))?;
    let attempts = sqlx::query(
        "SELECT attempt, at, duration_ms, status_code, error FROM event_delivery_attempts
         WHERE subscription_id = $1 AND event_id = $2 ORDER BY attempt",
    )
    .bind(subscription_id)
    .bind(event_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Attempt {
        attempt: r.get("attempt"),
        at: r.get("at"),
        duration_ms: r.get("duration_ms"),
        status_code: r.get("status_code"),
        error: r.get("error"),
    })
    .collect();
    Ok((delivery(&row), attempts))
}

/// Sends a delivery again, whatever its state: `pending` at once, with a fresh retry period.
/// Receivers deduplicate on the event id, so a second copy of a delivered event is harmless.
pub async fn redeliver(
    db: &Db,
    subscription_id: &str,
    event_id: &str,
) -> Result<(Delivery, Vec<Attempt>), StoreError> {
    let now = now_ms();
    let moved = sqlx::query(
        "UPDATE event_deliveries SET status = 'pending', next_attempt_at = $3, retry_from = $3
         WHERE subscription_id = $1 AND event_id = $2",
    )
    .bind(subscription_id)
    .bind(event_id)
    .bind(now)
    .execute(db)
    .await?;
    if moved.rows_affected() == 0 {
        return Err(StoreError::not_found(Entity::Delivery, event_id));
    }
    get_delivery(db, subscription_id, event_id).await
}
