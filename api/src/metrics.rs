//! `/metrics` in the Prometheus text format.
//!
//! - Measured in this process: HTTP requests and their latency per route (a middleware on the
//!   matched route, so ids do not explode the label space), and webhook requests by outcome.
//! - Counted from the database, so that they are right across API and worker processes and
//!   restarts: orders created, paid, cancelled by reason, rejected by code; refunds by outcome;
//!   orders needing attention by code; reconciliation's actions; payments their order could not
//!   take, by reason and decision. One grouped query per table, at most once per cache period
//!   (`ORDERFLOW_METRICS_CACHE`, 10 s by default): scrapes within it share one result, and
//!   concurrent scrapes wait for one computation, so that scraping never costs a full-table
//!   `GROUP BY` each time. These figures may be up to one period old.
//! - The Temporal worker's own metrics are on the worker's port (`ORDERFLOW_WORKER_METRICS_ADDR`),
//!   through the SDK's Prometheus exporter.
//!
//! Never label with an order id, a user id or anything else unbounded.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_store::Tally;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The API's own metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    webhooks: IntCounterVec,
    /// The database-derived part and when it was computed; `cache` long it is reused.
    counted: Mutex<Option<(Instant, String)>>,
    cache: Duration,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl Metrics {
    /// The API's metrics; the database-derived ones are recomputed at most once per `cache`
    /// (zero: on every scrape).
    pub fn new(cache: Duration) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "orderflow_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "orderflow_http_request_duration_seconds",
                "HTTP request latency by route and method",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "orderflow_webhook_requests_total",
                "Payment webhooks by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(webhooks.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            webhooks,
            counted: Mutex::new(None),
            cache,
        }
    }

    /// Counts a webhook request: its `status` when answered 2xx, its error code otherwise.
    pub fn webhook(&self, outcome: &str) {
        self.webhooks.with_label_values(&[outcome]).inc();
    }

    /// The whole exposition: this process's metrics, then the database-derived ones.
    pub async fn render(
        &self,
        db: &orderflow_store::Db,
    ) -> Result<String, orderflow_store::StoreError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        let mut text = String::from_utf8(out).expect("utf-8 exposition");
        let mut counted = self.counted.lock().await;
        match counted.as_ref() {
            Some((at, cached)) if at.elapsed() < self.cache => text.push_str(cached),
            _ => {
                let fresh = order_metrics(db).await?;
                text.push_str(&fresh);
                *counted = Some((Instant::now(), fresh));
            }
        }
        Ok(text)
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &BTreeMap<String, i64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn label(key: &str, value: &str) -> String {
    labels(&[(key, value)])
}

/// `{k1="v1",k2="v2"}`, values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(key, value)| {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The families counted by one grouped query each: what, name, type, help, label keys.
const TALLIES: [(Tally, &str, &str, &str, &[&str]); 7] = [
    (
        Tally::Refunds,
        "orderflow_refunds_total",
        "counter",
        "Refunds by outcome (pending, succeeded, failed)",
        &["outcome"],
    ),
    (
        Tally::NeedsAttention,
        "orderflow_orders_needs_attention",
        "gauge",
        "Orders stopped on a permanent error and waiting for ops, by code",
        &["code"],
    ),
    (
        Tally::ReconcileActions,
        "orderflow_reconcile_actions_total",
        "counter",
        "Reconciliation's actions on orders (repaired, reported, purged)",
        &["action"],
    ),
    (
        Tally::PaymentDecisions,
        "orderflow_payments_held_total",
        "counter",
        "Payments their order could not take, by reason and by decision (holding, applied, refunded, refund_failed, nothing_to_do)",
        &["reason", "state"],
    ),
    (
        Tally::UndeliveredEvents,
        "orderflow_events_undelivered",
        "gauge",
        "Events not delivered to a subscriber: pending (being retried) or failed (retries ran out; redeliver)",
        &["subscription", "status"],
    ),
    (
        Tally::Disputes,
        "orderflow_disputes_total",
        "counter",
        "Payments the payer's bank disputes, by what was done: flagged_for_ops (ops act) or entitlements_revoked",
        &["action"],
    ),
    (
        Tally::PartialRefunds,
        "orderflow_partial_refunds_total",
        "counter",
        "Partial refunds of paid orders, by kind (amount, lines, return) and outcome (pending, succeeded, failed)",
        &["kind", "outcome"],
    ),
];

async fn order_metrics(db: &orderflow_store::Db) -> Result<String, orderflow_store::StoreError> {
    use orderflow_store as store;
    let (mut created, mut paid) = (0i64, 0i64);
    let (mut cancelled, mut rejected, mut current) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (status, reason, code, was_paid, n) in store::order_counts(db).await? {
        created += n;
        if was_paid {
            paid += n;
        }
        *current.entry(label("status", &status)).or_insert(0) += n;
        match status.as_str() {
            "cancelled" => *cancelled.entry(label("reason", &reason)).or_insert(0) += n,
            "rejected" => *rejected.entry(label("code", &code)).or_insert(0) += n,
            _ => {}
        }
    }
    let mut out = String::new();
    let one = |v: i64| BTreeMap::from([(String::new(), v)]);
    family(
        &mut out,
        "orderflow_orders_created_total",
        "counter",
        "Orders created (rejected ones included)",
        &one(created),
    );
    family(
        &mut out,
        "orderflow_orders_paid_total",
        "counter",
        "Orders paid (later cancellations included)",
        &one(paid),
    );
    family(
        &mut out,
        "orderflow_orders_cancelled_total",
        "counter",
        "Orders cancelled, by reason",
        &cancelled,
    );
    family(
        &mut out,
        "orderflow_orders_rejected_total",
        "counter",
        "Orders rejected at creation, by code",
        &rejected,
    );
    family(
        &mut out,
        "orderflow_orders",
        "gauge",
        "Orders by current status",
        &current,
    );
    for (what, name, kind, help, keys) in TALLIES {
        let mut samples = BTreeMap::new();
        for (first, second, n) in store::tally(db, what).await? {
            let pairs: Vec<(&str, &str)> = keys
                .iter()
                .copied()
                .zip([first.as_str(), second.as_str()])
                .collect();
            samples.insert(labels(&pairs), n);
        }
        family(&mut out, name, kind, help, &samples);
    }
    Ok(out)
}

/// Middleware: counts and times every request by its matched route.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state.db).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::unavailable(
            crate::error::ErrorCode::DatabaseUnavailable,
            "metrics need the database",
            e,
        )
        .into_response(),
    }
}
