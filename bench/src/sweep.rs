//! Baseline (b): the seeds' design, run for real. Orders sit in a table with `expires_at`; a
//! sweep every 60 s runs `status = 'pending' AND expires_at < now LIMIT 100` and cancels each
//! order found, releasing its four holds, one transaction per order, as the seeds' shops do.
//!
//! Time-scaled: the sweep's 60 s interval is divided by `scale` (600 by default: a sweep every
//! 100 ms). Only the waiting is scaled; the sweeps' work is real. Reported unscaled: sweep `k`
//! (0-based) starts `k × 60 s` after the deadline — the first sweep right at the deadline, the
//! best case for the sweep — and an order it cancels settles at that start plus the real time
//! the sweep took to reach it. Its tables live only in the bench's database (`bench_sweep_*`).

use crate::load::Storm;
use orderflow_store::Db;
use std::time::{Duration, Instant};

const INTERVAL_SECS: f64 = 60.0;
const BATCH: i64 = 100;

/// Runs a storm of `n` orders through the sweep; `scale` divides the sweep interval.
pub async fn storm(db: &Db, n: u64, scale: f64) -> anyhow::Result<Storm> {
    for ddl in [
        "DROP TABLE IF EXISTS bench_sweep_holds",
        "DROP TABLE IF EXISTS bench_sweep_orders",
        "DROP TABLE IF EXISTS bench_sweep_balances",
        "CREATE TABLE bench_sweep_orders (id BIGINT PRIMARY KEY, status TEXT NOT NULL, expires_at BIGINT NOT NULL, cancelled_at BIGINT)",
        "CREATE INDEX bench_sweep_due ON bench_sweep_orders (status, expires_at)",
        "CREATE TABLE bench_sweep_holds (order_id BIGINT NOT NULL, resource TEXT NOT NULL, amount BIGINT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (order_id, resource))",
        "CREATE TABLE bench_sweep_balances (resource TEXT PRIMARY KEY, available BIGINT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(db).await?;
    }
    for r in ["stock", "coupon", "points", "wallet"] {
        sqlx::query("INSERT INTO bench_sweep_balances (resource, available) VALUES ($1, 0)")
            .bind(r)
            .execute(db)
            .await?;
    }
    let deadline = orderflow_store::now_ms();
    let mut tx = db.begin().await?;
    for id in 0..n as i64 {
        sqlx::query(
            "INSERT INTO bench_sweep_orders (id, status, expires_at) VALUES ($1, 'pending', $2)",
        )
        .bind(id)
        .bind(deadline)
        .execute(&mut *tx)
        .await?;
        for r in ["stock", "coupon", "points", "wallet"] {
            sqlx::query("INSERT INTO bench_sweep_holds (order_id, resource, amount, state) VALUES ($1, $2, 1, 'reserved')")
                .bind(id)
                .bind(r)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;

    // Virtual (unscaled) settle time of each order, in seconds after the deadline.
    let mut settled: Vec<f64> = Vec::with_capacity(n as usize);
    let mut sweep = 0u64;
    while (settled.len() as u64) < n {
        let start = Instant::now();
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM bench_sweep_orders WHERE status = 'pending' AND expires_at < $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(orderflow_store::now_ms() + 1)
        .bind(BATCH)
        .fetch_all(db)
        .await?;
        for id in due {
            let mut tx = db.begin().await?;
            let cancelled = sqlx::query("UPDATE bench_sweep_orders SET status = 'cancelled', cancelled_at = $2 WHERE id = $1 AND status = 'pending'")
                .bind(id)
                .bind(orderflow_store::now_ms())
                .execute(&mut *tx)
                .await?;
            if cancelled.rows_affected() == 1 {
                for r in ["stock", "coupon", "points", "wallet"] {
                    sqlx::query("UPDATE bench_sweep_holds SET state = 'released' WHERE order_id = $1 AND resource = $2 AND state = 'reserved'")
                        .bind(id)
                        .bind(r)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE bench_sweep_balances SET available = available + 1 WHERE resource = $1")
                        .bind(r)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            settled.push(sweep as f64 * INTERVAL_SECS + start.elapsed().as_secs_f64());
        }
        sweep += 1;
        tokio::time::sleep(Duration::from_secs_f64(INTERVAL_SECS / scale)).await;
    }
    // Unscaled times from the common deadline (0), in ms.
    let times: Vec<(i64, i64)> = settled.iter().map(|s| (0, (s * 1000.0) as i64)).collect();
    Ok(Storm::of(&times, 0.0))
}
