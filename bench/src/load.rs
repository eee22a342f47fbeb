//! Load shapes shared by every system under test: closed-loop levels stepped up until create
//! p99 passes 1 s or a backlog keeps growing, and the drain of an expiry storm watched as a
//! curve. The system itself is passed in as closures, so orderflow and the bare workflow are
//! measured by the same code.

use crate::stats::Percentiles;
use serde::Serialize;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Seconds an expiring order (or bare workflow) waits before its timer ends it.
pub const EXPIRY_SECS: u64 = 2;

/// One load level's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub clients: usize,
    pub lifecycles: u64,
    /// Lifecycles settled per second, drain included.
    pub settled_per_sec: f64,
    pub create: Percentiles,
    /// Seconds after the level's end until nothing it started was still open.
    pub drain_secs: f64,
    /// Whether the level held: create p99 ≤ 1 s and the drain no longer than the expiry plus
    /// a margin (a backlog that keeps growing drains for longer).
    pub held: bool,
}

/// `(seconds since the run's first level, create latency ms)`, for the latency-over-time chart.
pub type Timeline = Mutex<Vec<(f64, f64)>>;

/// Runs `clients` closed-loop clients for `secs`; `one(i)` runs lifecycle `i` (numbered from
/// `first`, so that ids never repeat across levels) as far as a
/// client waits for it and returns its create latency; `open()` counts what is still unsettled.
pub async fn level<F, Fut, O, OFut>(
    first: u64,
    clients: usize,
    secs: f64,
    one: &F,
    open: &O,
    timeline: &Timeline,
    epoch: Instant,
) -> anyhow::Result<Level>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
    O: Fn() -> OFut,
    OFut: Future<Output = anyhow::Result<u64>>,
{
    let next = AtomicU64::new(first);
    let creates = Mutex::new(Vec::new());
    let started = Instant::now();
    let client = || async {
        while started.elapsed().as_secs_f64() < secs {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let took = one(i).await?;
            let ms = took.as_secs_f64() * 1000.0;
            creates.lock().unwrap().push(ms);
            timeline
                .lock()
                .unwrap()
                .push((epoch.elapsed().as_secs_f64(), ms));
        }
        anyhow::Ok(())
    };
    futures::future::try_join_all((0..clients).map(|_| client())).await?;
    let ended = Instant::now();
    let margin = EXPIRY_SECS as f64 + (secs * 0.1).max(3.0);
    loop {
        if open().await? == 0 {
            break;
        }
        if ended.elapsed().as_secs_f64() > margin * 10.0 {
            anyhow::bail!(
                "{clients} clients: work still open {:.0} s after the level ended",
                ended.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = ended.elapsed().as_secs_f64();
    let lifecycles = next.load(Ordering::Relaxed) - first;
    let create = Percentiles::of_ms(&creates.into_inner().unwrap());
    Ok(Level {
        clients,
        lifecycles,
        settled_per_sec: lifecycles as f64 / started.elapsed().as_secs_f64(),
        create,
        drain_secs,
        held: create.p99_ms <= 1000.0 && drain_secs <= margin,
    })
}

/// Steps through `levels` until one does not hold. Returns every level run.
pub async fn step_up<F, Fut, O, OFut>(
    name: &str,
    levels: &[usize],
    secs: f64,
    one: &F,
    open: &O,
    timeline: &Timeline,
) -> anyhow::Result<Vec<Level>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
    O: Fn() -> OFut,
    OFut: Future<Output = anyhow::Result<u64>>,
{
    let epoch = Instant::now();
    let mut out: Vec<Level> = Vec::new();
    for &clients in levels {
        let first = out.iter().map(|l| l.lifecycles).sum();
        let l = level(first, clients, secs, one, open, timeline, epoch).await?;
        println!(
            "  {name}: {clients:>3} clients  {:>7.1} lifecycles/s  create p50/p99 {:.0}/{:.0} ms  drain {:.1} s{}",
            l.settled_per_sec,
            l.create.p50_ms,
            l.create.p99_ms,
            l.drain_secs,
            if l.held { "" } else { "  (did not hold: stop)" }
        );
        let held = l.held;
        out.push(l);
        if !held {
            break;
        }
    }
    Ok(out)
}

/// The level the sustained rate is read from: the fastest that held (the first if none did).
pub fn sustained_level(levels: &[Level]) -> Option<&Level> {
    levels
        .iter()
        .filter(|l| l.held)
        .max_by(|a, b| a.settled_per_sec.total_cmp(&b.settled_per_sec))
        .or_else(|| levels.first())
}

/// The sustained rate: [`sustained_level`]'s lifecycles per second.
pub fn sustained(levels: &[Level]) -> f64 {
    sustained_level(levels).map_or(0.0, |l| l.settled_per_sec)
}

/// How an expiry storm drained.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Storm {
    pub n: u64,
    /// Seconds the creation of the storm took.
    pub create_secs: f64,
    /// How far apart the storm's deadlines were (whole-second timeouts set at creation).
    pub deadline_spread_ms: f64,
    /// Each one's own deadline to the moment it had settled.
    pub settled: Percentiles,
    /// From the last deadline until the last one settled: how long the storm takes to clear
    /// once all of it is due (the spread of the deadlines themselves is not counted).
    pub drain_secs: f64,
    /// `(seconds since the earliest deadline, share settled)`.
    pub curve: Vec<(f64, f64)>,
}

impl Storm {
    /// From each one's `(deadline, settled)` wall-clock times, in ms.
    pub fn of(times: &[(i64, i64)], create_secs: f64) -> Storm {
        let first = times.iter().map(|t| t.0).min().unwrap_or(0);
        let last = times.iter().map(|t| t.0).max().unwrap_or(0);
        let latencies: Vec<f64> = times
            .iter()
            .map(|(due, done)| (done - due) as f64)
            .collect();
        let mut dones: Vec<i64> = times.iter().map(|t| t.1).collect();
        dones.sort_unstable();
        let n = dones.len().max(1) as f64;
        // At most about 500 points: enough for the chart, small enough for the JSON.
        let step = (dones.len() / 500).max(1);
        let curve = dones
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i == dones.len() - 1)
            .map(|(i, done)| ((done - first) as f64 / 1000.0, (i + 1) as f64 / n))
            .collect();
        Storm {
            n: times.len() as u64,
            create_secs,
            deadline_spread_ms: (last - first) as f64,
            settled: Percentiles::of_ms(&latencies),
            drain_secs: dones
                .last()
                .map_or(0.0, |d| (d - last).max(0) as f64 / 1000.0),
            curve,
        }
    }
}

/// Waits until `open()` is 0, printing progress every 5 s; fails after `limit`.
pub async fn drain<O, OFut>(what: &str, open: &O, limit: Duration) -> anyhow::Result<()>
where
    O: Fn() -> OFut,
    OFut: Future<Output = anyhow::Result<u64>>,
{
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let left = open().await?;
        if left == 0 {
            return Ok(());
        }
        if said.elapsed() > Duration::from_secs(5) {
            println!(
                "  {left} {what} still open after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        if started.elapsed() > limit {
            anyhow::bail!(
                "{left} {what} still open {} s after the drain began",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
