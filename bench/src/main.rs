//! `orderflow-bench`: orderflow against the engine's bare workflow and the seeds' sweep, in one
//! run on one machine (issue 12). Run it with `./scripts/bench` (see the README's performance
//! section); `--smoke` is the one-minute mode CI runs to keep it building and working.
//!
//! It starts its own stack ([`stack`]), drives it like clients do ([`shop`], [`bare`]), and
//! prints one table with the ratios, writes `results/<date>-<db>.json` and a chart. It never
//! asserts a timing: figures are reported, not judged. It does fail when the system under load
//! does something wrong (a refused order, a lost payment, work that never settles).

mod bare;
mod chart;
mod load;
mod probe;
mod report;
mod shop;
mod stack;
mod stats;
mod storm;
mod sweep;

use anyhow::{Context, bail};
use load::{EXPIRY_SECS, Timeline};
use orderflow::devserver::Synchronous;
use report::Results;
use shop::Shop;
use stack::Stack;
use stats::Percentiles;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: orderflow-bench [--smoke] [--storm N] [--levels 2,4,8] [--level-secs S] [--sweep-scale F] [--temporal-sync normal|full] [--temporal-config tuned|stock] [--out DIR]

  --smoke          about a minute: small levels and a storm of 30 (what CI runs)
  --storm N        orders in the expiry storm (default 10000)
  --levels L       closed-loop client counts to step through (default 2,4,8,16,32,64)
  --level-secs S   seconds per level (default 20)
  --sweep-scale F  the sweep baseline's 60 s interval is divided by F (default 600)
  --temporal-sync  the dev server's SQLite synchronous pragma: normal (default, as
                   `orderflow dev` runs it) or full (fsync at every commit)
  --temporal-config  tuned (default: the dynamic config `orderflow dev` gives its server,
                   devserver::LOW_LATENCY) or stock (the dev server's own defaults)
  --out DIR        where results go (default bench/results; --smoke: the run's own directory)

DATABASE_URL=postgres://user@host/db measures PostgreSQL (a fresh database is created on that
server); otherwise SQLite.";

/// What one run does.
struct Plan {
    smoke: bool,
    levels: Vec<usize>,
    level_secs: f64,
    unloaded: usize,
    loaded: usize,
    storm: u64,
    sweep_scale: f64,
    temporal_sync: Synchronous,
    low_latency: bool,
    out: Option<PathBuf>,
}

impl Plan {
    fn from_args(args: &[String]) -> anyhow::Result<Plan> {
        let mut plan = Plan {
            smoke: false,
            levels: vec![2, 4, 8, 16, 32, 64],
            level_secs: 20.0,
            unloaded: 100,
            loaded: 100,
            storm: 10_000,
            sweep_scale: 600.0,
            temporal_sync: Synchronous::default(),
            low_latency: true,
            out: None,
        };
        let mut it = args.iter();
        let (mut storm, mut levels, mut secs) = (None, None, None);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--smoke" => plan.smoke = true,
                "--storm" => storm = Some(value()?.parse().context("--storm takes a number")?),
                "--levels" => {
                    levels = Some(
                        value()?
                            .split(',')
                            .map(|c| {
                                c.trim()
                                    .parse::<usize>()
                                    .context("--levels takes numbers like 2,4,8")
                            })
                            .collect::<anyhow::Result<Vec<_>>>()?,
                    )
                }
                "--level-secs" => {
                    secs = Some(value()?.parse().context("--level-secs takes seconds")?)
                }
                "--sweep-scale" => {
                    plan.sweep_scale = value()?.parse().context("--sweep-scale takes a number")?
                }
                "--temporal-sync" => {
                    let v = value()?;
                    plan.temporal_sync = Synchronous::from_pragma(v).with_context(|| {
                        format!("--temporal-sync takes normal or full, not {v:?}")
                    })?
                }
                "--temporal-config" => {
                    plan.low_latency = match value()?.as_str() {
                        "tuned" => true,
                        "stock" => false,
                        v => bail!("--temporal-config takes tuned or stock, not {v:?}"),
                    }
                }
                "--out" => plan.out = Some(PathBuf::from(value()?)),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if plan.smoke {
            plan.levels = vec![2, 4];
            plan.level_secs = 4.0;
            plan.unloaded = 5;
            plan.loaded = 5;
            plan.storm = 30;
        }
        plan.storm = storm.unwrap_or(plan.storm);
        plan.levels = levels.unwrap_or(plan.levels);
        plan.level_secs = secs.unwrap_or(plan.level_secs);
        if plan.storm == 0
            || plan.levels.is_empty()
            || plan.levels.contains(&0)
            || plan.level_secs <= 0.0
            || plan.sweep_scale < 1.0
        {
            bail!(
                "--storm, --levels and --level-secs must be positive, --sweep-scale at least 1\n\n{USAGE}"
            );
        }
        Ok(plan)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = Plan::from_args(&args)?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let dir = std::env::temp_dir().join(format!("orderflow-bench-{run}"));
    std::fs::create_dir_all(&dir)?;
    println!(
        "orderflow-bench {run}: starting the stack in {} ...",
        dir.display()
    );
    let mut stack = Stack::start(dir.clone(), &run, plan.temporal_sync, plan.low_latency).await?;
    println!(
        "  {} ({}) · Temporal {} · API {} · logs in {}",
        stack.backend.name(),
        orderflow::run::redact(&stack.database_url),
        stack.temporal_address,
        stack.base,
        dir.display()
    );
    let results = measure(&plan, &mut stack, &run).await;
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            stack
                .check_alive()
                .context("the stack died under the benchmark")?;
            return Err(e.context(format!("the benchmark failed; logs in {}", dir.display())));
        }
    };
    print!("{}", results.table());
    let out = plan.out.clone().unwrap_or_else(|| {
        if plan.smoke {
            dir.clone()
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
        }
    });
    std::fs::create_dir_all(&out)?;
    let stem = format!("{}-{}", results.date, results.database);
    let json = out.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    let svg = out.join(format!("{stem}.svg"));
    chart::draw(&results, &svg)?;
    println!("results: {}\nchart:   {}", json.display(), svg.display());
    Ok(())
}

async fn open_orders(db: &orderflow_store::Db) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'pending_payment'")
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

async fn measure(plan: &Plan, stack: &mut Stack, run: &str) -> anyhow::Result<Results> {
    let shop = Arc::new(Shop::new(
        &stack.base,
        stack::JWT_SECRET,
        stack::WEBHOOK_SECRET,
        stack.sandbox.clone(),
    ));
    let bare = bare::Bare {
        client: stack.client.clone(),
        task_queue: stack.task_queue.clone(),
        run: run.to_owned(),
    };
    let db = stack.db.clone();
    let mut r = Results::new(
        plan.smoke,
        stack.backend.name(),
        plan.storm,
        plan.sweep_scale,
        plan.temporal_sync,
        plan.low_latency,
    );
    shop.stock().await?;
    let pool: usize = plan.levels.iter().sum::<usize>() * plan.level_secs as usize * 2 + 64;
    println!("setup: {pool} coupons for the lifecycle levels ...");
    shop.make_coupons(pool.min(20_000)).await?;

    // 1. Lifecycle throughput: orderflow, then the bare workflow, at the same levels.
    println!(
        "lifecycle throughput: half paid by webhook, half expiring after {EXPIRY_SECS} s; {} s per level",
        plan.level_secs
    );
    let one = |i: u64| {
        let shop = shop.clone();
        async move {
            if i % 2 == 0 {
                let (order, took) = shop.create(1800).await?;
                shop.pay(&order).await?;
                shop.until_paid(&order, Duration::from_millis(20)).await?;
                Ok(took)
            } else {
                Ok(shop.create(EXPIRY_SECS).await?.1)
            }
        }
    };
    let open = || open_orders(&db);
    lifecycle_levels("orderflow", plan, stack, &one, &open, &mut r.orderflow).await?;
    let bare_one = |i: u64| {
        let bare = &bare;
        async move {
            if i % 2 == 0 {
                let took = bare.start(i, orderflow_store::now_ms() + 1_800_000).await?;
                bare.signal_and_wait(i).await?;
                Ok(took)
            } else {
                bare.start(i, orderflow_store::now_ms() + EXPIRY_SECS as i64 * 1000)
                    .await
            }
        }
    };
    let bare_open = || bare.open();
    lifecycle_levels(
        "bare workflow",
        plan,
        stack,
        &bare_one,
        &bare_open,
        &mut r.bare,
    )
    .await?;

    // 2. Webhook -> paid, unloaded, then under half the sustained load.
    println!(
        "webhook -> paid: {} orders one at a time ...",
        plan.unloaded
    );
    shop.make_coupons(plan.unloaded + plan.loaded).await?;
    r.orderflow.webhook_to_paid_unloaded =
        webhook_to_paid(&shop, plan.unloaded, Duration::from_millis(2)).await?;
    let half = load::sustained(&r.orderflow.levels) / 2.0;
    println!(
        "webhook -> paid: {} orders one at a time under {half:.1} orders/s of background load ...",
        plan.loaded
    );
    shop.make_coupons((half * (plan.loaded as f64) * 2.0) as usize + 64)
        .await?;
    r.orderflow.webhook_to_paid_loaded = under_load(&shop, half, || {
        webhook_to_paid(&shop, plan.loaded, Duration::from_millis(5))
    })
    .await?;
    r.orderflow.webhook_loaded_at_per_sec = half;
    load::drain("orders", &|| open_orders(&db), Duration::from_secs(600)).await?;
    stack.check_alive()?;

    // 3. Cost per order: transactions and histories, a few at a time.
    println!("cost probe: transactions and history per paid and per expired order ...");
    shop.make_coupons(40).await?;
    (r.orderflow.cost_paid, r.orderflow.cost_expired) = cost_probe(&shop, stack, &db).await?;
    let ids: Vec<String> = (0..4)
        .map(|i| orderflow_workflows::baseline_workflow_id(run, i))
        .collect();
    r.bare.cost_paid = probe::histories(&stack.temporal_address, &ids)?;

    // 4. The expiry storm, three ways.
    println!(
        "expiry storm: {} orders due in the same second ...",
        plan.storm
    );
    shop.make_coupons(plan.storm as usize).await?;
    let rate = load::sustained(&r.orderflow.levels).max(1.0);
    (
        r.orderflow.storm,
        r.orderflow.storm_decided,
        r.orderflow.worker_rss_mb_with_storm_open,
    ) = storm::orderflow(&shop, stack, plan.storm, rate).await?;
    stack.check_alive()?;
    println!(
        "expiry storm: {} bare workflows due in the same second ...",
        plan.storm
    );
    r.bare.storm = storm::bare(&bare, plan.storm, load::sustained(&r.bare.levels).max(1.0)).await?;
    println!(
        "expiry storm: {} rows for the sweep (every 60 s, run {}× faster) ...",
        plan.storm, plan.sweep_scale
    );
    r.sweep.storm = sweep::storm(&db, plan.storm, plan.sweep_scale).await?;
    stack.check_alive()?;
    r.coupons_made_inline = shop
        .coupons_made_inline
        .load(std::sync::atomic::Ordering::Relaxed);
    r.finish();
    Ok(r)
}

/// Steps `one` through the plan's levels and records the levels, the CPU each part used per
/// 1,000 lifecycles and the create latencies over time in `into`.
async fn lifecycle_levels<F, Fut, O, OFut>(
    name: &str,
    plan: &Plan,
    stack: &mut Stack,
    one: &F,
    open: &O,
    into: &mut report::System,
) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
    O: Fn() -> OFut,
    OFut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let timeline: Timeline = Default::default();
    let cpu_before = stack.cpu();
    into.levels = load::step_up(name, &plan.levels, plan.level_secs, one, open, &timeline).await?;
    let lifecycles: u64 = into.levels.iter().map(|l| l.lifecycles).sum();
    into.cpu_per_1000 = report::CpuPer1000::of(stack.cpu() - cpu_before, lifecycles);
    into.latency_over_time = timeline.into_inner().unwrap();
    stack.check_alive()
}

/// Creates an order, then times its webhook until the buyer reads it paid; `n` times in a row.
async fn webhook_to_paid(shop: &Shop, n: usize, poll: Duration) -> anyhow::Result<Percentiles> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let (order, _) = shop.create(1800).await?;
        let started = Instant::now();
        shop.pay(&order).await?;
        shop.until_paid(&order, poll).await?;
        samples.push(started.elapsed());
    }
    Ok(Percentiles::of(&samples))
}

/// Runs `measure` while expiring orders are created at `per_sec` in the background.
async fn under_load<F, Fut, T>(shop: &Arc<Shop>, per_sec: f64, measure: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = tokio::spawn({
        let (shop, stop) = (shop.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec.max(0.1)));
            let mut set = tokio::task::JoinSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let shop = shop.clone();
                set.spawn(async move { shop.create(EXPIRY_SECS).await.map(|_| ()) });
            }
            while let Some(done) = set.join_next().await {
                done??;
            }
            anyhow::Ok(())
        }
    });
    let measured = measure().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await??;
    measured
}

/// 10 paid and 10 expired orders, 2 at a time, each kind's transactions and histories apart.
async fn cost_probe(
    shop: &Arc<Shop>,
    stack: &Stack,
    db: &orderflow_store::Db,
) -> anyhow::Result<(probe::Cost, probe::Cost)> {
    use futures::StreamExt;
    const N: usize = 10;
    let postgres = stack.backend == stack::Backend::Postgres;
    // The database's transactions per second with no order moving (the events outbox polls),
    // taken off each kind's count below.
    let idle_per_sec = if postgres {
        probe::settle_stats().await;
        let (before, at) = (probe::transactions(db).await?, Instant::now());
        probe::settle_stats().await;
        let after = probe::transactions(db).await?;
        (after - before - probe::OWN_PER_READING) as f64 / at.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let mut costs = Vec::new();
    for paid in [true, false] {
        if postgres {
            probe::settle_stats().await;
        }
        let before = if postgres {
            Some((
                probe::transactions(db).await?,
                probe::transaction_ids(db).await?,
                Instant::now(),
            ))
        } else {
            None
        };
        let ids: Vec<String> = futures::stream::iter(0..N)
            .map(|_| {
                let shop = shop.clone();
                async move {
                    if paid {
                        let (order, _) = shop.create(1800).await?;
                        shop.pay(&order).await?;
                        anyhow::Ok(order.order_id)
                    } else {
                        Ok(shop.create(1).await?.0.order_id)
                    }
                }
            })
            .buffer_unordered(2)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        // Settled, and a moment for the tail (fulfilment) to finish. Each poll is one
        // transaction of the bench's own, counted to be taken off.
        let polls = std::sync::atomic::AtomicI64::new(0);
        let open = || {
            polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            open_orders(db)
        };
        load::drain("orders", &open, Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (db_transactions, db_writes) = match before {
            Some((before, ids_before, at)) => {
                let ids_after = probe::transaction_ids(db).await?;
                probe::settle_stats().await;
                let after = probe::transactions(db).await?;
                // The bench's own: the polls, the `before` readings (the id reading is one
                // transaction too), and the background of an idle stack for as long.
                let own =
                    polls.load(std::sync::atomic::Ordering::Relaxed) + probe::OWN_PER_READING + 2;
                let idle = idle_per_sec * at.elapsed().as_secs_f64();
                let writes = ids_after - ids_before - probe::OWN_IDS_PER_READING;
                (
                    Some(((after - before - own) as f64 - idle) / N as f64),
                    Some(writes as f64 / N as f64),
                )
            }
            None => (None, None),
        };
        let workflow_ids: Vec<String> = ids
            .iter()
            .take(4)
            .map(|id| orderflow_workflows::workflow_id(id))
            .collect();
        costs.push(probe::Cost {
            db_transactions,
            db_writes,
            ..probe::histories(&stack.temporal_address, &workflow_ids)?
        });
    }
    let expired = costs.pop().unwrap();
    let paid = costs.pop().unwrap();
    Ok((paid, expired))
}
