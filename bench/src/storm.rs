//! The expiry storm for orderflow and the bare workflow: `n` of them created with deadlines in
//! one second, then their drain watched. The creation is planned from the rate the levels
//! measured, so that every deadline still lies ahead when its order is placed.

use crate::bare::Bare;
use crate::load::{self, Storm};
use crate::shop::Shop;
use crate::stack::Stack;
use crate::stats::Percentiles;
use anyhow::bail;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after the last deadline a storm may take to drain before the run fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(1800);

/// The common deadline: far enough out that `n` creations at 70 % of `per_sec` finish first.
fn plan_deadline_ms(n: u64, per_sec: f64) -> i64 {
    let secs = n as f64 / (0.7 * per_sec) + 10.0;
    orderflow_store::now_ms() + (secs * 1000.0) as i64
}

/// Whole seconds from now until `deadline_ms`, rounded up; fails if it has passed.
fn timeout_until(deadline_ms: i64, what: &str) -> anyhow::Result<u64> {
    let left = deadline_ms - orderflow_store::now_ms();
    if left < 1000 {
        bail!(
            "{what}: creating the storm fell behind its deadline; it runs slower than the levels measured (try a smaller --storm)"
        );
    }
    Ok(((left + 999) / 1000) as u64)
}

/// Runs `create(i)` for `i` in `0..n`, 32 at a time, with a progress line every 1,000;
/// returns the ids made.
async fn create_all<F, Fut>(n: u64, create: F) -> anyhow::Result<HashSet<String>>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let started = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    let created: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
        .map(|i| {
            let made = create(i);
            let done = &done;
            async move {
                let id = made.await?;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d % 1000 == 0 {
                    println!(
                        "  {d} of {n} created ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(id)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect()
}

/// orderflow's storm. Settled means cancelled with every hold released (one transaction), as
/// the database shows it: the rows are read every 100 ms, so each time is late by up to that.
/// Also returns the workflows' own decision latency (`cancelled_at - expires_at`, from the
/// rows) and the worker's RSS with the storm open.
pub async fn orderflow(
    shop: &Arc<Shop>,
    stack: &Stack,
    n: u64,
    per_sec: f64,
) -> anyhow::Result<(Storm, Percentiles, f64)> {
    let db = &stack.db;
    let deadline = plan_deadline_ms(n, per_sec);
    let started = Instant::now();
    let ids = create_all(n, |_| async {
        let timeout = timeout_until(deadline, "orderflow")?;
        Ok(shop.create(timeout).await?.0.order_id)
    })
    .await?;
    let create_secs = started.elapsed().as_secs_f64();
    let rss = stack.worker_rss_mb();
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MIN(expires_at), MAX(expires_at) FROM orders WHERE status = 'pending_payment'",
    )
    .fetch_one(db)
    .await?;
    let (first, last) = (first.unwrap_or(deadline), last.unwrap_or(deadline));
    println!(
        "  created in {create_secs:.0} s; worker RSS {rss:.0} MB; deadlines within {} ms; draining ...",
        last - first
    );
    // Each order's first sighting as cancelled.
    let mut seen: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
    let mut said = Instant::now();
    while seen.len() < ids.len() {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT order_id, expires_at FROM orders WHERE status = 'cancelled' AND expires_at BETWEEN $1 AND $2",
        )
        .bind(first)
        .bind(last)
        .fetch_all(db)
        .await?;
        let now = orderflow_store::now_ms();
        for (id, due) in rows {
            if ids.contains(&id) {
                seen.entry(id).or_insert((due, now));
            }
        }
        if orderflow_store::now_ms() - last > DRAIN_LIMIT.as_millis() as i64 {
            bail!(
                "{} of {n} orders still open {} s after their deadline",
                ids.len() - seen.len(),
                DRAIN_LIMIT.as_secs()
            );
        }
        if said.elapsed() > Duration::from_secs(5) && now > first {
            println!(
                "  {} of {n} settled, {:.1} s after the first deadline",
                seen.len(),
                (now - first) as f64 / 1000.0
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times: Vec<(i64, i64)> = seen.into_values().collect();
    let storm = Storm::of(&times, create_secs);
    let decided: Vec<f64> = sqlx::query_scalar::<_, i64>(
        "SELECT cancelled_at - expires_at FROM orders WHERE status = 'cancelled' AND expires_at BETWEEN $1 AND $2",
    )
    .bind(first)
    .bind(last)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|ms| ms as f64)
    .collect();
    Ok((storm, Percentiles::of_ms(&decided), rss))
}

/// The bare workflow's storm: `n` started with timers ending at one instant. Settled means the
/// workflow completed (its one activity done), at the close time the server recorded.
pub async fn bare(bare: &Bare, n: u64, per_sec: f64) -> anyhow::Result<Storm> {
    let deadline = plan_deadline_ms(n, per_sec);
    let started = Instant::now();
    const FIRST: u64 = 1_000_000_000;
    let ids = create_all(n, |i| async move {
        timeout_until(deadline, "bare workflow")?;
        bare.start(FIRST + i, deadline).await?;
        Ok(orderflow_workflows::baseline_workflow_id(
            &bare.run,
            FIRST + i,
        ))
    })
    .await?;
    let create_secs = started.elapsed().as_secs_f64();
    println!("  created in {create_secs:.0} s; draining ...");
    load::drain("bare workflows", &|| bare.open(), DRAIN_LIMIT).await?;
    // Visibility is eventually consistent: the open count can read 0 before the workflows just
    // started are indexed, and a completed one is listed a moment after it closed. So wait
    // until every one is listed; the times are the server's close times, not when we looked.
    let waited = Instant::now();
    let closed = loop {
        let closed = bare.close_times(&ids).await?;
        if closed.len() as u64 == n {
            break closed;
        }
        if waited.elapsed() > DRAIN_LIMIT {
            bail!(
                "{} of {n} bare workflows of the storm are listed as completed {} s after the drain",
                closed.len(),
                DRAIN_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let times: Vec<(i64, i64)> = closed.into_iter().map(|c| (deadline, c)).collect();
    Ok(Storm::of(&times, create_secs))
}
