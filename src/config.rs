//! Configuration from environment variables. Every value has a default that serves
//! `orderflow dev`; a bad value is an error that names the variable, never a silent fallback.

use anyhow::{Context, bail};
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
}

/// The secret `orderflow dev` uses when none is configured. Never use it in production.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_orderflow_dev";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    pub fn from_env() -> anyhow::Result<Config> {
        let payment_timeout_secs = match var("ORDER_PAYMENT_TIMEOUT") {
            Some(v) => v.trim().parse::<u64>().with_context(|| {
                format!("ORDER_PAYMENT_TIMEOUT={v:?} is not a number of seconds")
            })?,
            None => 1800,
        };
        if !(1..=86_400).contains(&payment_timeout_secs) {
            bail!(
                "ORDER_PAYMENT_TIMEOUT must be between 1 and 86400 seconds, got {payment_timeout_secs}"
            );
        }
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
        Ok(Config {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://data/orderflow.db".into()),
            temporal_address,
            temporal_namespace: var("TEMPORAL_NAMESPACE").unwrap_or_else(|| "default".into()),
            task_queue: var("ORDERFLOW_TASK_QUEUE")
                .unwrap_or_else(|| orderflow_workflows::TASK_QUEUE.into()),
            http_addr: var("ORDERFLOW_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            payment_timeout_secs,
            webhook_secrets,
            currency,
            data_dir: var("ORDERFLOW_DATA_DIR").unwrap_or_else(|| "data".into()),
        })
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
        }
    }
}
