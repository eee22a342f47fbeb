//! A randomized scenario against the real stack (issue 11): at least 200 steps drawn from a
//! printed seed (`SCENARIO_SEED` replays one, `SCENARIO_STEPS` sets the length): orders
//! created with and without coupons, points and wallet funds, paid by signed webhooks,
//! webhooks delivered twice, payments that arrive after a cancel or a deadline, cancels,
//! shipments, deadlines left to fire, and refunds the provider answers late or refuses for a
//! while (the steps are in `common/scenario.rs`). Steps run six at a time, so that they
//! interleave; the seed fixes the steps, not their timing.
//!
//! Every answer must be a success or one of the step's documented refusals (never a 5xx other
//! than a 503 that is retried). At the end every order is driven to its end, every workflow
//! must finish, and the two-way audit must be clean: every captured payment applied once or
//! refunded once, every refund meant.

mod common;

use common::scenario::{Rng, Seen, Step, end_every_order, run, stock_the_shop};
use common::spawn_app;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[tokio::test]
async fn a_random_scenario_from_a_printed_seed_strands_no_money() {
    let seed: u64 = std::env::var("SCENARIO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| orderflow_store::now_ms() as u64);
    let steps: usize = std::env::var("SCENARIO_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    println!(
        "scenario seed {seed}, {steps} steps (replay: SCENARIO_SEED={seed} ./scripts/test --test scenario)"
    );
    let started = std::time::Instant::now();
    let app = spawn_app().await;
    stock_the_shop(&app).await;
    let mut rng = Rng(seed);
    let plan: Vec<Step> = (0..steps).map(|_| Step::draw(&mut rng)).collect();
    let seen = Mutex::new(Seen::default());
    for batch in plan.chunks(6) {
        futures::future::join_all(batch.iter().map(|s| run(&app, s, &seen))).await;
    }

    // The end of every order: pending ones cancelled, paid physical ones shipped; then every
    // workflow finishes.
    let orders = seen.lock().unwrap().orders.clone();
    let ended = end_every_order(&app, &orders).await;
    app.assert_invariants().await;

    let seen = seen.into_inner().unwrap();
    let mut by_kind: BTreeMap<&str, u32> = BTreeMap::new();
    for s in &plan {
        *by_kind.entry(s.kind()).or_default() += 1;
    }
    println!(
        "scenario seed {seed}: {steps} steps, {} orders, {} webhooks, {} refunds at the provider, audit clean, {:.0} s",
        orders.len(),
        seen.webhooks.len(),
        app.sandbox.refunds().len(),
        started.elapsed().as_secs_f64()
    );
    println!("  steps: {by_kind:?}");
    println!("  orders ended: {ended:?}");
    for ((kind, status, code), n) in &seen.answers {
        println!("  {kind:<18} {status} {code:<24} {n}");
    }
}
