//! Events out to other services: the transactional outbox and its dispatcher.
//!
//! [`publish`] runs inside the transaction of every step of an order's log
//! (`orders::append_event`): a step that other services care about (placed, paid, cancelled,
//! fulfilled, a refund's outcome) writes its event, and one pending delivery per subscriber
//! of its type, in that same transaction. So an event exists if and only if its change
//! committed, and a retried step writes nothing twice.
//!
//! [`Dispatcher`] runs beside every worker. It takes due deliveries under a lease (two
//! dispatchers never send one at once; a dispatcher killed mid-delivery leaves a lease that
//! expires), POSTs each body signed with the subscriber's secret, and records every attempt.
//! A 2xx marks it delivered; anything else retries with exponential backoff until its retry
//! period ends, then marks it `failed` for ops to redeliver. An order's events go out in
//! their `seq` order: an event waits while an earlier one of its order is still pending for
//! that subscriber.
//!
//! Delivery is at least once: an answer lost after the subscriber handled the event brings
//! the event again, with the same id, which receivers deduplicate on. This module must never
//! mark a delivery delivered without a 2xx from the subscriber, and never drop one silently.

use crate::Db;
use crate::error::StoreError;
use crate::holds::Tx;
use crate::orders::Step;
use futures::StreamExt;
use orderflow_provider::signature;
use serde_json::json;
use sqlx::Row;
use std::time::{Duration, Instant};

/// The header that signs each delivery: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// the scheme the API's own webhook accepts.
pub const SIGNATURE_HEADER: &str = "Orderflow-Signature";

/// The event types a step of an order's log publishes (most steps publish none).
fn event_types(step: &Step<'_>) -> &'static [&'static str] {
    let key = step.key.as_str();
    match key {
        "status:pending_payment" => &["order.placed"],
        // Paid at creation (nothing payable): placed and paid at once.
        "status:paid" if step.from.is_none() => &["order.placed", "order.paid"],
        "status:paid" => &["order.paid"],
        "status:cancelled" => &["order.cancelled"],
        "status:fulfilled" => &["order.fulfilled"],
        _ if key.starts_with("disputed:") => &["order.disputed"],
        _ if key.starts_with("partial_refund:") => match key.rsplit(':').next() {
            Some("succeeded") => &["refund.succeeded"],
            Some("failed") => &["refund.failed"],
            _ => &[],
        },
        _ if key.starts_with("return:") => match key.rsplit(':').next() {
            Some("requested") => &["return.requested"],
            Some("received") => &["return.received"],
            Some("refunded") => &["return.refunded"],
            Some("refund_failed") => &["return.refund_failed"],
            _ => &[],
        },
        _ if key.starts_with("refund:") => match refund_outcome(key, step.payment_id) {
            Some("succeeded") => &["refund.succeeded"],
            Some("failed") => &["refund.failed"],
            _ => &[],
        },
        _ => &[],
    }
}

/// The outcome word of a refund step, `refund:<payment_id>:<outcome>[:<attempt>]`.
fn refund_outcome<'k>(key: &'k str, payment_id: Option<&str>) -> Option<&'k str> {
    let rest = key.strip_prefix("refund:")?;
    let rest = rest.strip_prefix(payment_id?)?.strip_prefix(':')?;
    rest.split(':').next()
}

/// Writes the events of `step`, and a pending delivery of each to its subscribers, in the
/// transaction that wrote the step (only when the step was new).
pub(crate) async fn publish(
    tx: &mut Tx<'_>,
    order_id: &str,
    step: &Step<'_>,
    at: i64,
) -> Result<(), StoreError> {
    for event_type in event_types(step) {
        // The order's next number, under its row's lock (see the migration).
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE orders SET event_seq = event_seq + 1 WHERE order_id = $1 RETURNING event_seq",
        )
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(seq) = seq else {
            // Steps are written for recorded orders only (`append_event_if_order`).
            return Err(StoreError::not_found(
                orderflow_store::Entity::Order,
                order_id,
            ));
        };
        let event_id = format!("evt_{order_id}_{seq}");
        let body = json!({
            "id": event_id,
            "type": event_type,
            "created_at": orderflow_store::rfc3339(at),
            "order_id": order_id,
            "seq": seq,
            "data": {
                "status": step.to,
                "previous_status": step.from,
                "reason": step.reason,
                "payment_id": step.payment_id,
                // Names what the event is about: `partial_refund:<refund_id>:<outcome>`,
                // `return:<return_id>:<state>`, `refund:<payment_id>:<outcome>`, ...
                "step": step.key,
            },
        });
        sqlx::query(
            "INSERT INTO outbox_events (event_id, order_id, seq, event_type, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&event_id)
        .bind(order_id)
        .bind(seq)
        .bind(*event_type)
        .bind(body.to_string())
        .bind(at)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO event_deliveries
                 (subscription_id, event_id, order_id, seq, status, attempts, next_attempt_at, retry_from)
             SELECT subscription_id, $1, $2, $3, 'pending', 0, $4, $4 FROM event_subscriptions
             WHERE disabled_at IS NULL AND event_types LIKE $5",
        )
        .bind(&event_id)
        .bind(order_id)
        .bind(seq)
        .bind(at)
        .bind(format!("%,{event_type},%"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// How the dispatcher works (`ORDERFLOW_EVENTS_*`, see the README).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// How often it looks for due deliveries when it found none.
    pub poll: Duration,
    /// How long one POST may take before it counts as failed.
    pub timeout: Duration,
    /// The longest wait between two attempts (the backoff doubles from 1 s up to this).
    pub max_backoff: Duration,
    /// How long a delivery is retried, from its event (or its redelivery), before it is
    /// marked `failed`.
    pub retry_for: Duration,
    /// Deliveries sent at once.
    pub concurrency: usize,
    /// How long delivered events (and their log) are kept; failed and pending ones are kept
    /// until they are delivered.
    pub retention: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            poll: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(600),
            retry_for: Duration::from_secs(3 * 24 * 3600),
            concurrency: 8,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A delivery taken under lease, with what sending it needs.
struct Due {
    subscription_id: String,
    event_id: String,
    order_id: String,
    event_type: String,
    attempts: i64,
    retry_from: i64,
    url: String,
    secret: String,
    body: String,
}

/// What one attempt came to.
struct Answer {
    status_code: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
}

impl Answer {
    fn delivered(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Delivers the outbox's events to their subscribers; see the module doc.
#[derive(Clone)]
pub struct Dispatcher {
    db: Db,
    http: reqwest::Client,
    settings: DispatchSettings,
}

impl Dispatcher {
    pub fn new(db: Db, settings: DispatchSettings) -> Result<Dispatcher, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Dispatcher { db, http, settings })
    }

    /// Delivers until the process ends. A database error is logged and waited out; it never
    /// stops the loop.
    pub async fn run(self) {
        tracing::info!(
            poll_ms = self.settings.poll.as_millis() as u64,
            retry_for_secs = self.settings.retry_for.as_secs(),
            "delivering events to subscribers"
        );
        let mut failures = 0u32;
        let mut purged_at: Option<Instant> = None;
        loop {
            if purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                let before = crate::now_ms() - self.settings.retention.as_millis() as i64;
                match purge_delivered(&self.db, before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(deleted = n, "delivered events past their retention purged")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot purge delivered events; trying again later")
                    }
                }
                purged_at = Some(Instant::now());
            }
            match self.deliver_due().await {
                Ok(0) => {
                    failures = 0;
                    tokio::time::sleep(self.settings.poll).await;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = self.settings.poll * failures.min(20);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64,
                        "event delivery: the database did not answer; trying again");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One pass: takes the due deliveries (at most a batch) and sends them. Returns how many
    /// it sent.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = crate::now_ms();
        let candidates = sqlx::query(
            "SELECT d.subscription_id, d.event_id, d.order_id, d.attempts, d.retry_from,
                    s.url, s.secret, e.event_type, e.body
             FROM event_deliveries d
             JOIN event_subscriptions s ON s.subscription_id = d.subscription_id
             JOIN outbox_events e ON e.event_id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1
               AND (d.lease_until IS NULL OR d.lease_until < $1)
               AND s.disabled_at IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM event_deliveries p
                   WHERE p.subscription_id = d.subscription_id AND p.order_id = d.order_id
                     AND p.seq < d.seq AND p.status = 'pending')
             ORDER BY d.next_attempt_at, d.order_id, d.seq
             LIMIT $2",
        )
        .bind(now)
        .bind(self.settings.concurrency as i64 * 4)
        .fetch_all(&self.db)
        .await?;
        let mut due = Vec::with_capacity(candidates.len());
        // Long enough for the POST and its bookkeeping; a dispatcher that dies leaves it to expire.
        let lease_until = now + self.settings.timeout.as_millis() as i64 + 5_000;
        for row in candidates {
            let d = Due {
                subscription_id: row.get("subscription_id"),
                event_id: row.get("event_id"),
                order_id: row.get("order_id"),
                event_type: row.get("event_type"),
                attempts: row.get("attempts"),
                retry_from: row.get("retry_from"),
                url: row.get("url"),
                secret: row.get("secret"),
                body: row.get("body"),
            };
            let taken = sqlx::query(
                "UPDATE event_deliveries SET lease_until = $3
                 WHERE subscription_id = $1 AND event_id = $2 AND status = 'pending'
                   AND (lease_until IS NULL OR lease_until < $4)",
            )
            .bind(&d.subscription_id)
            .bind(&d.event_id)
            .bind(lease_until)
            .bind(now)
            .execute(&self.db)
            .await?;
            if taken.rows_affected() == 1 {
                due.push(d);
            }
        }
        let sent = due.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(due)
            .map(|d| self.deliver(d))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(sent)
    }

    /// Sends one delivery and records the attempt.
    async fn deliver(&self, d: Due) -> Result<(), StoreError> {
        let span = tracing::info_span!("deliver_event", order_id = %d.order_id,
            event_id = %d.event_id, subscription_id = %d.subscription_id);
        let _enter = span.enter();
        let answer = self.post(&d).await;
        crate::faults::point("event_delivery.after_post", &d.order_id, None);
        self.record(&d, &answer).await
    }

    async fn post(&self, d: &Due) -> Answer {
        let started = Instant::now();
        let t = crate::now_ms() / 1000;
        let sent = self
            .http
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature::sign(&d.secret, t, d.body.as_bytes()),
            )
            .header("Orderflow-Event-Id", &d.event_id)
            .header("Orderflow-Event-Type", &d.event_type)
            .body(d.body.clone())
            .send()
            .await;
        let duration_ms = started.elapsed().as_millis() as i64;
        match sent {
            Ok(response) => Answer {
                status_code: Some(i64::from(response.status().as_u16())),
                error: (!response.status().is_success())
                    .then(|| format!("the subscriber answered {}", response.status())),
                duration_ms,
            },
            Err(e) => Answer {
                status_code: None,
                error: Some(describe(&e)),
                duration_ms,
            },
        }
    }

    /// The attempt's row and the delivery's new state, in one transaction. A delivery a
    /// redelivery or another dispatcher changed meanwhile keeps their state.
    async fn record(&self, d: &Due, answer: &Answer) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let attempt = d.attempts + 1;
        let (status, next, delivered_at) = if answer.delivered() {
            ("delivered", now, Some(now))
        } else if now >= d.retry_from + self.settings.retry_for.as_millis() as i64 {
            ("failed", now, None)
        } else {
            let wait = backoff(attempt, self.settings.max_backoff);
            ("pending", now + wait.as_millis() as i64, None)
        };
        let mut tx = self.db.begin().await?;
        let moved = sqlx::query(
            "UPDATE event_deliveries SET status = $3, attempts = $4, next_attempt_at = $5,
                 lease_until = NULL, last_status_code = $6, last_error = $7, delivered_at = $8
             WHERE subscription_id = $1 AND event_id = $2 AND attempts = $9",
        )
        .bind(&d.subscription_id)
        .bind(&d.event_id)
        .bind(status)
        .bind(attempt)
        .bind(next)
        .bind(answer.status_code)
        .bind(answer.error.as_deref())
        .bind(delivered_at)
        .bind(d.attempts)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            // Another dispatcher took it after our lease ran out and recorded first.
            tracing::info!("event delivery: already recorded by another attempt");
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO event_delivery_attempts
                 (subscription_id, event_id, attempt, at, duration_ms, status_code, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.subscription_id)
        .bind(&d.event_id)
        .bind(attempt)
        .bind(now)
        .bind(answer.duration_ms)
        .bind(answer.status_code)
        .bind(answer.error.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        match status {
            "delivered" => tracing::debug!(attempt, "event delivered"),
            "failed" => tracing::warn!(attempt, error = ?answer.error,
                "event delivery failed for good: its retry period is over (redeliver to try again)"),
            _ => tracing::info!(attempt, error = ?answer.error, "event delivery will be retried"),
        }
        Ok(())
    }
}

/// The wait after the `attempt`-th failure: 1 s, 2 s, 4 s ... up to `cap`.
fn backoff(attempt: i64, cap: Duration) -> Duration {
    let doubled = 1u64 << (attempt.clamp(1, 40) as u32 - 1);
    Duration::from_secs(doubled).min(cap)
}

/// How often a dispatcher purges delivered events past their retention.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the deliveries delivered before `before_ms` with their attempts, then the events
/// older than that which no delivery needs any more. Pending and failed deliveries, and their
/// events, are kept. Returns how many deliveries went.
pub async fn purge_delivered(db: &Db, before_ms: i64) -> Result<u64, StoreError> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "DELETE FROM event_delivery_attempts WHERE EXISTS (
             SELECT 1 FROM event_deliveries d
             WHERE d.subscription_id = event_delivery_attempts.subscription_id
               AND d.event_id = event_delivery_attempts.event_id
               AND d.status = 'delivered' AND d.delivered_at < $1)",
    )
    .bind(before_ms)
    .execute(&mut *tx)
    .await?;
    let deliveries = sqlx::query(
        "DELETE FROM event_deliveries WHERE status = 'delivered' AND delivered_at < $1",
    )
    .bind(before_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM outbox_events WHERE created_at < $1 AND NOT EXISTS (
             SELECT 1 FROM event_deliveries d WHERE d.event_id = outbox_events.event_id)",
    )
    .bind(before_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deliveries.rows_affected())
}

/// Why a POST got no answer, in words for the delivery log.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_builder() {
        "the subscriber URL cannot be used"
    } else if e.is_timeout() {
        "no answer within the timeout"
    } else if e.is_connect() {
        "cannot connect to the subscriber"
    } else {
        "the request failed"
    };
    // The source chain says which (DNS, refused, TLS), without the URL's query.
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(key: &str, from: Option<&'a str>, payment_id: Option<&'a str>) -> Step<'a> {
        Step {
            key: key.to_owned(),
            from,
            to: "paid",
            reason: None,
            payment_id,
        }
    }

    #[test]
    fn steps_publish_the_events_of_their_outcome() {
        assert_eq!(
            event_types(&step("status:pending_payment", None, None)),
            ["order.placed"]
        );
        assert_eq!(
            event_types(&step("status:paid", None, None)),
            ["order.placed", "order.paid"]
        );
        assert_eq!(
            event_types(&step("status:paid", Some("pending_payment"), None)),
            ["order.paid"]
        );
        assert_eq!(
            event_types(&step("refund:pay:1:succeeded", None, Some("pay:1"))),
            ["refund.succeeded"]
        );
        assert_eq!(
            event_types(&step("refund:pay_1:failed:2", None, Some("pay_1"))),
            ["refund.failed"]
        );
        assert!(event_types(&step("refund:pay_1:pending", None, Some("pay_1"))).is_empty());
        assert!(event_types(&step("payment:pay_1:captured", None, Some("pay_1"))).is_empty());
        assert_eq!(
            event_types(&step("partial_refund:rf_1:succeeded", None, Some("pay_1"))),
            ["refund.succeeded"]
        );
        assert!(event_types(&step("partial_refund:rf_1:pending", None, None)).is_empty());
        assert_eq!(
            event_types(&step("return:ret_1:received", None, None)),
            ["return.received"]
        );
        assert_eq!(
            event_types(&step("disputed:pay_1", None, Some("pay_1"))),
            ["order.disputed"]
        );
        for event_type in [
            "order.placed",
            "order.paid",
            "order.cancelled",
            "order.disputed",
        ] {
            assert!(orderflow_store::events_out::EVENT_TYPES.contains(&event_type));
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cap = Duration::from_secs(600);
        let waits: Vec<u64> = [1, 2, 3, 10, 11, 1000]
            .map(|a| backoff(a, cap).as_secs())
            .to_vec();
        assert_eq!(waits, [1, 2, 4, 512, 600, 600]);
    }
}
