//! Configuration from environment variables. Every value has a default that serves
//! `orderflow dev`; a bad value is an error that names the variable, never a silent fallback.

use anyhow::{Context, bail};
use orderflow_provider::ProviderConfig;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: `sqlite://...` (default `sqlite://data/orderflow.db`) or `postgres://...`.
    pub database_url: String,
    /// `TEMPORAL_ADDRESS`: the Temporal frontend (default `http://127.0.0.1:7233`).
    pub temporal_address: String,
    /// `TEMPORAL_NAMESPACE` (default `default`).
    pub temporal_namespace: String,
    /// `ORDERFLOW_TASK_QUEUE` (default `orderflow-orders`).
    pub task_queue: String,
    /// `ORDERFLOW_HTTP_ADDR` (default `127.0.0.1:8080`).
    pub http_addr: String,
    /// `ORDER_PAYMENT_TIMEOUT`: seconds, 1 to 86400 (default 1800).
    pub payment_timeout_secs: u64,
    /// `PAYMENT_WEBHOOK_SECRET`, and during a rotation `PAYMENT_WEBHOOK_SECRET_PREVIOUS`.
    pub webhook_secrets: Vec<String>,
    /// `ORDERFLOW_CURRENCY` (default `USD`).
    pub currency: String,
    /// `ORDERFLOW_DATA_DIR`: where `orderflow dev` keeps the dev server's database (default `data`).
    pub data_dir: String,
    /// `ORDER_CHECKOUT_WINDOW`: seconds an open checkout session holds off the deadline,
    /// 1 to 3600 (default 300).
    pub checkout_window_secs: u64,
    /// `ORDER_LATE_PAYMENT_GRACE`: seconds a settled order's workflow stays open to refund late
    /// payments itself, 0 to 604800 (default 3600). Later payments are refunded by the API.
    pub late_payment_grace_secs: u64,
    /// `PAYMENT_PROVIDER_URL` (default `http://127.0.0.1:8081`, the sandbox of `orderflow dev`),
    /// `PAYMENT_PROVIDER_API_KEY` (default the sandbox's dev key) and
    /// `PAYMENT_PROVIDER_TIMEOUT` (seconds per call, 1 to 120, default 10).
    pub provider: ProviderConfig,
    /// `SANDBOX_ADDR`: where `orderflow provider-sandbox` (and `dev`) listen (default
    /// `127.0.0.1:8081`).
    pub sandbox_addr: String,
    /// `SANDBOX_WEBHOOK_URL`: where the sandbox sends webhooks (default: this API's webhook).
    pub sandbox_webhook_url: String,
    /// `ORDERFLOW_JWT_SECRET`: the HS256 secret of client tokens (default: a dev secret).
    pub jwt_secret: String,
    /// `ORDER_MAX_OPEN_PER_USER`: unpaid orders a user may have open at once (default 10).
    pub max_open_orders_per_user: i64,
    /// `TEMPORAL_UI_PORT`: the Web UI port of the dev server `dev` starts (default 8233; `off`
    /// starts it headless, so that two stacks on one machine do not collide).
    pub temporal_ui_port: Option<u16>,
    /// `ORDERFLOW_WORKER_METRICS_ADDR`: where the worker serves the SDK's Prometheus metrics
    /// (default `127.0.0.1:9464`; `off` disables).
    pub worker_metrics_addr: Option<std::net::SocketAddr>,
    /// `ORDERFLOW_RECONCILE_EVERY`: seconds between reconciliation runs (default 60).
    pub reconcile_every_secs: u64,
    /// `ORDER_RECONCILE_STALE_AFTER`: a pending order this many seconds past its deadline is
    /// looked at (default 300).
    pub reconcile_stale_after_secs: u64,
    /// `WEBHOOK_INBOX_RETENTION`: seconds processed webhook events are kept (default 30 days).
    pub inbox_retention_secs: u64,
    /// `PAYMENT_UNKNOWN_ORDER_HOLD`: seconds a payment for an order we do not know is held
    /// before it is refunded, in case it raced its own order's creation (default 3600).
    pub unknown_order_hold_secs: u64,
    /// `WEBHOOK_INBOX_REDRIVE_AFTER`: seconds after which an inbox event never handed on is
    /// handed on again by reconciliation (default 60).
    pub inbox_redrive_after_secs: u64,
    /// `ORDERFLOW_METRICS_CACHE`: seconds `/metrics` reuses the figures it counts in the
    /// database, 0 to 300 (default 10; 0 counts on every scrape).
    pub metrics_cache_secs: u64,
    /// `ORDERFLOW_WORKFLOW_CACHE`: how many workflows the worker keeps in memory between their
    /// tasks (default [`DEFAULT_WORKFLOW_CACHE`]; 0 keeps none). An evicted order replays its
    /// history at its next task.
    pub workflow_cache: usize,
    /// `ORDERFLOW_WORKER_MAX_RSS_MB`: resident memory, in MB, at which `orderflow worker` stops
    /// gracefully and exits with an error for its supervisor to start it again (default 0:
    /// never). The SDK keeps a few KB for every workflow run the worker ever held (issue 12), so
    /// a long-lived worker grows; this bounds it.
    pub worker_max_rss_mb: Option<u64>,
    /// `ORDERFLOW_SHUTDOWN_GRACE`: on SIGTERM, seconds the API lets requests in flight finish and
    /// the worker lets running activities finish, before exiting anyway (default 30).
    pub shutdown_grace_secs: u64,
    /// How the worker delivers events to subscribers: `ORDERFLOW_EVENTS_POLL_MS` (default 500),
    /// `ORDERFLOW_EVENTS_TIMEOUT` (seconds per POST, 1 to 60, default 10),
    /// `ORDERFLOW_EVENTS_MAX_BACKOFF` (the longest wait between attempts, 1 to 86400 s, default
    /// 600) and `ORDERFLOW_EVENTS_RETRY_FOR` (how long a delivery is retried before it is
    /// `failed`, 60 s to 30 days, default 3 days) and `ORDERFLOW_EVENTS_RETENTION` (how long
    /// delivered events and their log are kept, default 30 days).
    pub events: orderflow_activities::events_out::DispatchSettings,
    /// `ORDER_CAPTURE`: `immediate` (default) captures every payment at once; `at_shipment`
    /// only authorizes orders with physical goods at checkout and captures when they ship.
    /// `ORDER_AUTHORIZATION_EXPIRY`: `capture` (default) or `void` an authorization still
    /// unshipped `ORDER_AUTHORIZATION_MARGIN` seconds (default 86400) before its
    /// `capture_before`.
    pub capture: orderflow_workflows::model::CapturePolicy,
    /// `SANDBOX_AUTHORIZATION_TTL`: seconds the sandbox lets an authorization be captured
    /// (default 7 days).
    pub sandbox_authorization_ttl_secs: u64,
}

/// Reads `ORDER_CAPTURE`, `ORDER_AUTHORIZATION_EXPIRY` and `ORDER_AUTHORIZATION_MARGIN`.
fn capture_policy() -> anyhow::Result<orderflow_workflows::model::CapturePolicy> {
    use orderflow_workflows::model::{AuthorizationExpiry, CapturePolicy, CaptureTiming};
    let timing = match var("ORDER_CAPTURE").as_deref() {
        None | Some("immediate") => CaptureTiming::Immediate,
        Some("at_shipment") => CaptureTiming::AtShipment,
        Some(other) => bail!("ORDER_CAPTURE must be immediate or at_shipment, got {other:?}"),
    };
    let on_expiry = match var("ORDER_AUTHORIZATION_EXPIRY").as_deref() {
        None | Some("capture") => AuthorizationExpiry::Capture,
        Some("void") => AuthorizationExpiry::Void,
        Some(other) => {
            bail!("ORDER_AUTHORIZATION_EXPIRY must be capture or void, got {other:?}")
        }
    };
    Ok(CapturePolicy {
        timing,
        on_expiry,
        margin_secs: secs(
            "ORDER_AUTHORIZATION_MARGIN",
            orderflow_workflows::model::DEFAULT_AUTHORIZATION_MARGIN_SECS,
            0..=30 * 86_400,
        )?,
    })
}

/// Workflows a worker keeps in memory by default (`ORDERFLOW_WORKFLOW_CACHE`).
pub const DEFAULT_WORKFLOW_CACHE: usize = 1000;

/// The JWT secret `orderflow dev` uses when none is configured. Never use it in production.
pub const DEV_JWT_SECRET: &str = "orderflow-dev-jwt-secret";

/// The sandbox's API key in `orderflow dev`. Never use it in production.
pub const DEV_PROVIDER_API_KEY: &str = "sk_sandbox_orderflow_dev";

/// Reads a number of seconds from `name`, with a default and an allowed range.
fn secs(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<u64> {
    number(name, default, range, "seconds")
}

/// Reads a count from `name`, with a default and an allowed range.
fn count(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<u64> {
    number(name, default, range, "")
}

fn number(
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> anyhow::Result<u64> {
    let (of, unit) = match unit {
        "" => (String::new(), String::new()),
        unit => (format!(" of {unit}"), format!(" {unit}")),
    };
    let value = match var(name) {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{name}={v:?} is not a number{of}"))?,
        None => default,
    };
    if !range.contains(&value) {
        bail!(
            "{name} must be between {} and {}{unit}, got {value}",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

/// The secret `orderflow dev` uses when none is configured. Never use it in production.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_orderflow_dev";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// What order workflows carry of this configuration (reconciliation's resumed runs too).
    pub fn order_settings(&self) -> orderflow_activities::OrderSettings {
        orderflow_activities::OrderSettings {
            checkout_window_secs: self.checkout_window_secs,
            late_payment_grace_secs: self.late_payment_grace_secs,
            capture: self.capture,
        }
    }

    /// What the worker runs with, beyond its connections.
    pub fn worker_settings(&self) -> crate::run::WorkerSettings {
        crate::run::WorkerSettings {
            task_queue: self.task_queue.clone(),
            unknown_order_hold_secs: self.unknown_order_hold_secs,
            order: self.order_settings(),
            workflow_cache: self.workflow_cache,
        }
    }

    pub fn from_env() -> anyhow::Result<Config> {
        let payment_timeout_secs = secs("ORDER_PAYMENT_TIMEOUT", 1800, 1..=86_400)?;
        let mut webhook_secrets =
            vec![var("PAYMENT_WEBHOOK_SECRET").unwrap_or_else(|| DEV_WEBHOOK_SECRET.to_owned())];
        webhook_secrets.extend(var("PAYMENT_WEBHOOK_SECRET_PREVIOUS"));
        let currency = var("ORDERFLOW_CURRENCY").unwrap_or_else(|| "USD".into());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            bail!(
                "ORDERFLOW_CURRENCY must be a three-letter ISO 4217 code like USD, got {currency:?}"
            );
        }
        let mut temporal_address =
            var("TEMPORAL_ADDRESS").unwrap_or_else(|| "http://127.0.0.1:7233".into());
        if !temporal_address.contains("://") {
            temporal_address = format!("http://{temporal_address}");
        }
        let http_addr = var("ORDERFLOW_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        let provider = ProviderConfig {
            base_url: var("PAYMENT_PROVIDER_URL").unwrap_or_else(|| "http://127.0.0.1:8081".into()),
            api_key: var("PAYMENT_PROVIDER_API_KEY")
                .unwrap_or_else(|| DEV_PROVIDER_API_KEY.to_owned()),
            timeout: Duration::from_secs(secs("PAYMENT_PROVIDER_TIMEOUT", 10, 1..=120)?),
        };
        Ok(Config {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://data/orderflow.db".into()),
            temporal_address,
            temporal_namespace: var("TEMPORAL_NAMESPACE").unwrap_or_else(|| "default".into()),
            task_queue: var("ORDERFLOW_TASK_QUEUE")
                .unwrap_or_else(|| orderflow_workflows::TASK_QUEUE.into()),
            sandbox_webhook_url: var("SANDBOX_WEBHOOK_URL")
                .unwrap_or_else(|| format!("http://{http_addr}/v1/payments/webhook")),
            http_addr,
            payment_timeout_secs,
            webhook_secrets,
            currency,
            data_dir: var("ORDERFLOW_DATA_DIR").unwrap_or_else(|| "data".into()),
            checkout_window_secs: secs("ORDER_CHECKOUT_WINDOW", 300, 1..=3600)?,
            late_payment_grace_secs: secs("ORDER_LATE_PAYMENT_GRACE", 3600, 0..=604_800)?,
            provider,
            sandbox_addr: var("SANDBOX_ADDR").unwrap_or_else(|| "127.0.0.1:8081".into()),
            jwt_secret: var("ORDERFLOW_JWT_SECRET").unwrap_or_else(|| DEV_JWT_SECRET.to_owned()),
            max_open_orders_per_user: count("ORDER_MAX_OPEN_PER_USER", 10, 1..=10_000)? as i64,
            workflow_cache: count(
                "ORDERFLOW_WORKFLOW_CACHE",
                DEFAULT_WORKFLOW_CACHE as u64,
                0..=100_000,
            )? as usize,
            worker_max_rss_mb: match number("ORDERFLOW_WORKER_MAX_RSS_MB", 0, 0..=1_000_000, "MB")?
            {
                0 => None,
                mb => Some(mb),
            },
            temporal_ui_port: match var("TEMPORAL_UI_PORT").as_deref() {
                Some("off") => None,
                Some(p) => Some(p.parse().ok().filter(|p| *p > 0).with_context(|| {
                    format!("TEMPORAL_UI_PORT={p:?} is not a port (1..65535) or off")
                })?),
                None => Some(8233),
            },
            worker_metrics_addr: match var("ORDERFLOW_WORKER_METRICS_ADDR").as_deref() {
                Some("off") => None,
                Some(a) => Some(a.parse().with_context(|| {
                    format!("ORDERFLOW_WORKER_METRICS_ADDR={a:?} is not host:port")
                })?),
                None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            },
            reconcile_every_secs: secs("ORDERFLOW_RECONCILE_EVERY", 60, 10..=86_400)?,
            reconcile_stale_after_secs: secs("ORDER_RECONCILE_STALE_AFTER", 300, 0..=604_800)?,
            inbox_retention_secs: secs(
                "WEBHOOK_INBOX_RETENTION",
                30 * 86_400,
                3_600..=3_650 * 86_400,
            )?,
            shutdown_grace_secs: secs("ORDERFLOW_SHUTDOWN_GRACE", 30, 1..=3_600)?,
            metrics_cache_secs: secs("ORDERFLOW_METRICS_CACHE", 10, 0..=300)?,
            unknown_order_hold_secs: secs("PAYMENT_UNKNOWN_ORDER_HOLD", 3600, 0..=604_800)?,
            capture: capture_policy()?,
            sandbox_authorization_ttl_secs: secs(
                "SANDBOX_AUTHORIZATION_TTL",
                orderflow_sandbox::DEFAULT_AUTHORIZATION_TTL.as_secs(),
                1..=30 * 86_400,
            )?,
            inbox_redrive_after_secs: secs("WEBHOOK_INBOX_REDRIVE_AFTER", 60, 1..=86_400)?,
            events: orderflow_activities::events_out::DispatchSettings {
                poll: Duration::from_millis(number(
                    "ORDERFLOW_EVENTS_POLL_MS",
                    500,
                    50..=60_000,
                    "milliseconds",
                )?),
                timeout: Duration::from_secs(secs("ORDERFLOW_EVENTS_TIMEOUT", 10, 1..=60)?),
                max_backoff: Duration::from_secs(secs(
                    "ORDERFLOW_EVENTS_MAX_BACKOFF",
                    600,
                    1..=86_400,
                )?),
                retry_for: Duration::from_secs(secs(
                    "ORDERFLOW_EVENTS_RETRY_FOR",
                    3 * 86_400,
                    60..=30 * 86_400,
                )?),
                retention: Duration::from_secs(secs(
                    "ORDERFLOW_EVENTS_RETENTION",
                    30 * 86_400,
                    3_600..=3_650 * 86_400,
                )?),
                ..Default::default()
            },
        })
    }

    /// The reconciliation schedule's input.
    pub fn reconcile_input(&self) -> orderflow_workflows::model::ReconcileInput {
        orderflow_workflows::model::ReconcileInput {
            stale_after_secs: self.reconcile_stale_after_secs,
            inbox_retention_secs: self.inbox_retention_secs,
            redrive_after_secs: Some(self.inbox_redrive_after_secs),
        }
    }

    /// The settings the API needs per request.
    pub fn api(&self) -> orderflow_api::ApiConfig {
        orderflow_api::ApiConfig {
            task_queue: self.task_queue.clone(),
            currency: self.currency.clone(),
            payment_timeout_secs: self.payment_timeout_secs,
            webhook_secrets: self.webhook_secrets.clone(),
            webhook_tolerance: Duration::from_secs(300),
            workflow_wait: Duration::from_secs(30),
            checkout_window_secs: self.checkout_window_secs,
            late_payment_grace_secs: self.late_payment_grace_secs,
            capture: self.capture,
            jwt_secret: self.jwt_secret.clone(),
            max_open_orders_per_user: self.max_open_orders_per_user,
            unknown_order_hold_secs: self.unknown_order_hold_secs,
        }
    }
}
