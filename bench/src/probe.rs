//! What one order costs beyond time: database transactions (PostgreSQL's own counter) and
//! Temporal history events and activity tasks (read from the histories with the `temporal`
//! CLI). Probes run a few orders at a time with nothing else going on, so the counts are theirs.

use anyhow::{Context, bail};
use orderflow_store::Db;
use serde::Serialize;
use std::process::Command;
use std::time::Duration;

/// Per-order costs of one kind of lifecycle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cost {
    /// Committed plus rolled-back transactions per order, reads included, with the database's
    /// idle background (the events outbox's poll) taken off (PostgreSQL only).
    pub db_transactions: Option<f64>,
    /// Of those, the ones that wrote: each took a transaction id (PostgreSQL only).
    pub db_writes: Option<f64>,
    pub history_events: f64,
    pub activity_tasks: f64,
    pub workflow_tasks: f64,
}

/// Transactions a [`transactions`] reading itself adds to the count.
pub const OWN_PER_READING: i64 = 2;

/// PostgreSQL's transaction count for the current database, as of now. Backends report their
/// counts when idle for a while, so the caller waits before reading (see [`settle_stats`]).
pub async fn transactions(db: &Db) -> anyhow::Result<i64> {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(db)
        .await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await
    .context("reading pg_stat_database")?;
    Ok(n)
}

/// Transaction ids a [`transaction_ids`] reading itself takes.
pub const OWN_IDS_PER_READING: i64 = 1;

/// The cluster's next transaction id. Only a transaction that writes takes one, so the
/// difference between two readings counts the writing transactions between them (nothing else
/// writes to the benchmark's PostgreSQL while a probe runs).
pub async fn transaction_ids(db: &Db) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT txid_current()::BIGINT")
        .fetch_one(db)
        .await
        .context("reading txid_current()")
}

/// Waits out PostgreSQL's idle statistics interval (10 s), so every backend has reported.
pub async fn settle_stats() {
    tokio::time::sleep(Duration::from_secs(11)).await;
}

/// `(events, activity tasks scheduled, workflow tasks completed)` of one workflow's history.
pub fn history(temporal_address: &str, workflow_id: &str) -> anyhow::Result<(u64, u64, u64)> {
    let address = temporal_address.trim_start_matches("http://");
    let out = Command::new("temporal")
        .args([
            "workflow",
            "show",
            "--address",
            address,
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
        ])
        .output()
        .context("running `temporal workflow show`")?;
    if !out.status.success() {
        bail!(
            "`temporal workflow show {workflow_id}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the history's JSON")?;
    let events = json["events"].as_array().context("events in the history")?;
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| {
                let t = e["eventType"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('_', "")
                    .to_ascii_lowercase();
                t.ends_with(kind)
            })
            .count() as u64
    };
    Ok((
        events.len() as u64,
        of("activitytaskscheduled"),
        of("workflowtaskcompleted"),
    ))
}

/// The mean history of `ids`, as a [`Cost`] without its transactions.
pub fn histories(temporal_address: &str, ids: &[String]) -> anyhow::Result<Cost> {
    let (mut e, mut a, mut w) = (0u64, 0u64, 0u64);
    for id in ids {
        let (events, activities, tasks) = history(temporal_address, id)?;
        e += events;
        a += activities;
        w += tasks;
    }
    let n = ids.len().max(1) as f64;
    Ok(Cost {
        db_transactions: None,
        db_writes: None,
        history_events: e as f64 / n,
        activity_tasks: a as f64 / n,
        workflow_tasks: w as f64 / n,
    })
}
