//! Outages of the parts around the worker (issue 11), each under load, each ending with every
//! order where its path says, every effect once, and a clean two-way audit:
//!
//! - the Temporal dev server killed with SIGKILL and restarted on its file, with 200 orders in
//!   flight (timers due during the outage and after it; lateness is printed);
//! - PostgreSQL: every backend of the test database terminated again and again while orders
//!   settle, and the cluster restarted once under load (when `TEST_PG_RESTART` gives the
//!   command, as `.ci/run` does);
//! - SQLite: a storm of writers, and the write lock held past the busy timeout, so that
//!   transactions fail with `SQLITE_BUSY` and are retried;
//! - two workers and two API processes, one of each killed under load.
//!
//! The tests of this binary run one at a time: a database restart cuts every connection of
//! the process.

mod common;

use common::{Reply, TestApp, WorkerMode, spawn_app_at, spawn_app_with, until_answered};
use orderflow::devserver;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PRICE: i64 = 1000;
const STOCK: i64 = 100_000;

/// The digital SKU every order of these tests buys.
async fn sell_ebooks(app: &TestApp) {
    app.put_sku_with(
        "ebook",
        json!({"price": PRICE, "stock": STOCK, "kind": "digital"}),
    )
    .await;
}

/// One order of `user` for one `sku`, unpaid for `timeout` seconds.
fn one_of(user: &str, sku: &str, timeout: u64) -> Value {
    json!({"user_id": user, "items": [{"sku": sku, "quantity": 1}], "payment_timeout_secs": timeout})
}

/// Creates the order (retrying through outages with the same key) and returns its id.
async fn place(app: &TestApp, user: &str, body: Value) -> String {
    let created = until_answered("create", || app.create_order("k", body.clone())).await;
    assert_eq!(created.status, 201, "{user}: {}", created.body);
    created.body["order_id"].as_str().unwrap().to_owned()
}

/// Waits until the order has `status` and its workflow has finished. A read the outage cuts
/// off (503) is read again; any other refusal fails the test.
async fn ends(app: &TestApp, order_id: &str, status: &str) {
    let what = format!("{order_id} {status}");
    app.eventually(300, &what, || async {
        let path = format!("/v1/orders/{order_id}");
        let r = app.buyer_of(order_id).await.get(&path).await;
        assert!(matches!(r.status, 200 | 503), "{order_id}: {}", r.body);
        (r.status == 200 && r.body["status"] == status).then_some(())
    })
    .await;
    app.settled(order_id).await;
}

/// Percentiles of `ms` (sorted in place), for the printed figures.
fn spread(ms: &mut [i64]) -> String {
    if ms.is_empty() {
        return "none".into();
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        ms.len()
    )
}

/// The database's `at` of each order's cancellation, minus its deadline: how late its timer fired.
async fn timer_lateness(app: &TestApp, orders: &[String]) -> BTreeMap<String, i64> {
    let mut late = BTreeMap::new();
    for order_id in orders {
        let (expires_at, at): (i64, i64) = sqlx::query_as(
            "SELECT o.expires_at, e.at FROM orders o JOIN order_events e ON e.order_id = o.order_id \
             WHERE o.order_id = $1 AND e.to_status = 'cancelled'",
        )
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        late.insert(order_id.clone(), at - expires_at);
    }
    late
}

/// Exactly one capture at the provider per paid order, none for the others, and no refund.
fn one_capture_each(app: &TestApp, paid: &[String], unpaid: &[String]) {
    let payments = app.sandbox.payments();
    for order_id in paid {
        let n = payments.iter().filter(|p| &p.order_id == order_id).count();
        assert_eq!(n, 1, "{order_id}: captures at the provider");
    }
    for order_id in unpaid {
        assert!(
            !payments.iter().any(|p| &p.order_id == order_id),
            "{order_id} was charged"
        );
    }
    assert!(app.sandbox.refunds().is_empty(), "no refund was owed");
}

/// The end of a run of `(order, path)` where path 1 is paid and every other one unpaid: one
/// capture per paid order, the stock sold exactly, and the invariants and the audit clean.
async fn each_effect_once(app: &TestApp, placed: &[(String, usize)]) {
    let (paid, unpaid): (Vec<_>, Vec<_>) = placed.iter().partition(|(_, path)| *path == 1);
    let ids = |v: Vec<&(String, usize)>| v.into_iter().map(|(o, _)| o.clone()).collect::<Vec<_>>();
    let (paid, unpaid) = (ids(paid), ids(unpaid));
    one_capture_each(app, &paid, &unpaid);
    sold_exactly(app, "ebook", paid.len()).await;
    app.assert_invariants().await;
}

/// Stock counters after `sold` orders of `sku` were paid and every other one released.
async fn sold_exactly(app: &TestApp, sku: &str, sold: usize) {
    let row = app.sku(sku).await;
    assert_eq!(
        (
            row["reserved"].as_i64(),
            row["sold"].as_i64(),
            row["available"].as_i64()
        ),
        (Some(0), Some(sold as i64), Some(STOCK - sold as i64)),
        "{sku}: {row}"
    );
}

/// 200 orders in flight, the server killed with SIGKILL, restarted on the same file: 100
/// unpaid orders wait on deadlines (half due during the outage, half after it), 50 have an
/// open checkout session and are paid after the restart, 50 were paid just before the kill
/// and are settling. Every timer fires, every order ends, each effect happens once.
#[tokio::test]
async fn a_killed_temporal_server_restarted_on_its_file_loses_no_order_and_no_timer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = common::tempdir("temporal-restart");
    let file = dir.join("temporal.db").to_string_lossy().into_owned();
    let port = devserver::free_port().unwrap();
    let start = || {
        devserver::start(&devserver::StartOptions {
            port,
            ui_port: None,
            db_file: Some(file.clone()),
            synchronous: devserver::Synchronous::default(),
            low_latency: true,
        })
        .expect("start the dev server on its file")
    };
    let mut server = Some(start());
    let app = spawn_app_at(
        server.as_ref().unwrap().address.clone(),
        WorkerMode::External,
    )
    .await;
    sell_ebooks(&app).await;
    let deaths = AtomicU32::new(0);

    let work = async {
        let app = &app;
        let in_checkout: Vec<String> = futures::future::join_all((0..50).map(|i| {
            let user = format!("checkout-{i}");
            async move { place(&app, &user, one_of(&user, "ebook", 3600)).await }
        }))
        .await;
        let pay_urls: Vec<String> =
            futures::future::join_all(in_checkout.iter().map(|o| async move {
                let session = until_answered("checkout", || app.checkout(o)).await;
                assert_eq!(session.status, 200, "{o}: {}", session.body);
                session.body["pay_url"].as_str().unwrap().to_owned()
            }))
            .await;
        let settling: Vec<String> = futures::future::join_all((0..50).map(|i| {
            let user = format!("settling-{i}");
            async move { place(&app, &user, one_of(&user, "ebook", 3600)).await }
        }))
        .await;
        // Deadlines 40 s (group a) and 80 s (group b) out: group a falls due while the server
        // is down. Paid at the same time, just before the kill: the signals are in, their
        // activities in flight.
        let deadlines = futures::future::join_all((0..100).map(|i| {
            let user = format!("deadline-{}-{i}", if i % 2 == 0 { "a" } else { "b" });
            let timeout = if i % 2 == 0 { 40 } else { 80 };
            async move { place(&app, &user, one_of(&user, "ebook", timeout)).await }
        }));
        let payments = futures::future::join_all(settling.iter().map(|o| async move {
            let event = app.captured(o, PRICE);
            let r = until_answered("webhook", || app.deliver(&event)).await;
            assert_eq!(
                (r.status, &r.body["status"]),
                (200, &json!("signalled")),
                "{o}"
            );
        }));
        let (waiting, _) = futures::join!(deadlines, payments);

        let killed_at = orderflow_store::now_ms();
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders WHERE status = 'pending_payment' AND expires_at > $1 \
             AND user_id LIKE 'deadline-%'",
        )
        .bind(killed_at)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(pending, 100, "every deadline is still ahead at the kill");
        drop(server.take()); // SIGKILL: no shutdown, no flush beyond what SQLite made durable.
        // Down until every deadline of group a has passed.
        let first_due: i64 = sqlx::query_scalar(
            "SELECT MAX(expires_at) FROM orders WHERE user_id LIKE 'deadline-a-%'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        let down_ms = (first_due + 1000 - orderflow_store::now_ms()).max(5000);
        tokio::time::sleep(Duration::from_millis(down_ms as u64)).await;
        let restarted = Instant::now();
        server = Some(start());
        let back_at = orderflow_store::now_ms();
        let restart_secs = restarted.elapsed().as_secs_f64();

        // After the restart: the open sessions are paid at the provider.
        futures::future::join_all(pay_urls.iter().map(|url| async move {
            let paid = until_answered("pay", || app.pay(url, None)).await;
            assert_eq!(paid.status, 200, "{}", paid.body);
        }))
        .await;
        let paid: Vec<String> = in_checkout.iter().chain(&settling).cloned().collect();
        for o in &paid {
            ends(&app, o, "fulfilled").await;
        }
        let unpaid = waiting.clone();
        for o in &unpaid {
            ends(&app, o, "cancelled").await;
            assert_eq!(app.order(o).await["cancel_reason"], "timeout", "{o}");
        }
        (paid, unpaid, waiting, killed_at, back_at, restart_secs)
    };
    let (paid, unpaid, waiting, killed_at, back_at, restart_secs) = tokio::select! {
        r = work => r,
        () = app.supervise(&[], &deaths) => unreachable!("the supervisor runs until dropped"),
    };

    one_capture_each(&app, &paid, &unpaid);
    sold_exactly(&app, "ebook", paid.len()).await;
    app.assert_invariants().await;

    // Lateness: timers due in the outage, from the moment the server was back; the others,
    // from their deadline.
    let late = timer_lateness(&app, &unpaid).await;
    let (mut in_outage, mut after) = (Vec::new(), Vec::new());
    for o in &waiting {
        let expires_at: i64 =
            sqlx::query_scalar("SELECT expires_at FROM orders WHERE order_id = $1")
                .bind(o)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if expires_at < back_at {
            in_outage.push(late[o] - (back_at - expires_at));
        } else {
            after.push(late[o]);
        }
    }
    println!(
        "temporal restart: 200 orders in flight, server down {:.1} s (restart took {restart_secs:.1} s), \
         {} worker restarts, 0 lost orders, 0 double effects, audit clean",
        (back_at - killed_at) as f64 / 1000.0,
        deaths.load(Ordering::SeqCst)
    );
    println!(
        "  timers due during the outage, fired after the server was back: {}",
        spread(&mut in_outage)
    );
    println!(
        "  timers due after the restart, lateness: {}",
        spread(&mut after)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL: 60 orders settle (20 paid, 20 cancelled by their user, 20 timed out) while every
/// backend of the database is terminated every 300 ms for 20 s, and the cluster is restarted
/// once in the middle (`TEST_PG_RESTART`). Every client request is retried with its key, as a
/// client would. Each effect happens once; the audit is clean.
#[tokio::test]
async fn postgres_connections_cut_and_a_restart_under_load_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(WorkerMode::External).await;
    if !app.on_postgres() {
        println!("skipped: PostgreSQL only (TEST_DATABASE_URL)");
        return;
    }
    sell_ebooks(&app).await;
    let admin = app
        .admin_db()
        .await
        .expect("PostgreSQL through TEST_DATABASE_URL");
    let deaths = AtomicU32::new(0);
    let (cut, restarts) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let load_done = tokio::sync::Notify::new();

    let load = async {
        let app = &app;
        let placed: Vec<(String, usize)> = futures::future::join_all((0..60).map(|i| {
            let user = format!("cut-{i}");
            let timeout = if i % 3 == 0 { 8 } else { 3600 };
            async move {
                (
                    place(&app, &user, one_of(&user, "ebook", timeout)).await,
                    i % 3,
                )
            }
        }))
        .await;
        futures::future::join_all(placed.iter().map(|(o, path)| async move {
            match path {
                1 => {
                    let event = app.captured(o, PRICE);
                    let r = until_answered("webhook", || app.deliver(&event)).await;
                    assert_eq!(r.status, 200, "{o}: {}", r.body);
                }
                2 => {
                    let r = until_answered("cancel", || app.cancel(o, "user")).await;
                    assert_eq!(r.status, 200, "{o}: {}", r.body);
                }
                _ => {}
            }
        }))
        .await;
        for (o, path) in &placed {
            ends(&app, o, if *path == 1 { "fulfilled" } else { "cancelled" }).await;
        }
        load_done.notify_one();
        placed
    };
    // Cuts every connection every 300 ms for 20 s (or until the load is done), with one
    // restart of the whole cluster half-way.
    let cutter = async {
        let started = Instant::now();
        let restart = std::env::var("TEST_PG_RESTART")
            .ok()
            .filter(|c| !c.is_empty());
        while started.elapsed() < Duration::from_secs(20) {
            if restart.is_some()
                && restarts.load(Ordering::SeqCst) == 0
                && started.elapsed() > Duration::from_secs(10)
            {
                let cmd = restart.clone().unwrap();
                let out = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh").args(["-c", &cmd]).output()
                })
                .await
                .unwrap()
                .expect("run TEST_PG_RESTART");
                assert!(
                    out.status.success(),
                    "TEST_PG_RESTART: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                restarts.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if let Ok(n) = app.cut_connections(&admin).await {
                cut.fetch_add(n as usize, Ordering::SeqCst);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
                () = load_done.notified() => break,
            }
        }
    };
    let (placed, ()) = tokio::select! {
        r = async { futures::join!(load, cutter) } => r,
        () = app.supervise(&[], &deaths) => unreachable!("the supervisor runs until dropped"),
    };

    each_effect_once(&app, &placed).await;
    let cut = cut.load(Ordering::SeqCst);
    assert!(cut > 0, "no connection was cut");
    println!(
        "postgres faults: 60 orders, {cut} backends terminated, {} cluster restarts{}, {} worker restarts, 0 double effects, audit clean",
        restarts.load(Ordering::SeqCst),
        if std::env::var("TEST_PG_RESTART").is_ok() {
            ""
        } else {
            " (TEST_PG_RESTART not set)"
        },
        deaths.load(Ordering::SeqCst)
    );
}

/// SQLite: 40 orders fall due and 20 are paid while another process holds the write lock for
/// longer than the busy timeout, and 16 writers storm the same file. Transactions fail with
/// `SQLITE_BUSY` (the storm's own writers count theirs) and are retried; each effect happens
/// once and the audit is clean.
#[tokio::test]
async fn an_sqlite_busy_storm_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(WorkerMode::External).await;
    if app.on_postgres() {
        println!("skipped: SQLite only");
        return;
    }
    sell_ebooks(&app).await;
    app.put_sku_with("storm", json!({"price": 1, "stock": 1, "kind": "digital"}))
        .await;
    let storm_db = orderflow_store::db::connect(&app.database_url)
        .await
        .unwrap();
    let deaths = AtomicU32::new(0);
    let (busy, storm_writes) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let storm_over = std::sync::atomic::AtomicBool::new(false);

    let work = async {
        let app = &app;
        let timing_out: Vec<String> = futures::future::join_all((0..40).map(|i| {
            let user = format!("busy-{i}");
            async move { place(&app, &user, one_of(&user, "ebook", 3)).await }
        }))
        .await;
        let paying: Vec<String> = futures::future::join_all((0..20).map(|i| {
            let user = format!("busy-paid-{i}");
            async move { place(&app, &user, one_of(&user, "ebook", 3600)).await }
        }))
        .await;
        // The write lock, held 16 s (the busy timeout is 15 s), while the deadlines fall due
        // and the payments arrive.
        let hold = app.hold_write_lock(Duration::from_secs(16));
        let storm = futures::future::join_all((0..16).map(|_| async {
            while !storm_over.load(Ordering::SeqCst) {
                let tx = async {
                    let mut tx = storm_db.begin().await?;
                    sqlx::query("UPDATE skus SET price = price WHERE sku = 'storm'")
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                };
                match tx.await {
                    Ok(()) => storm_writes.fetch_add(1, Ordering::SeqCst),
                    Err(e)
                        if e.to_string().contains("locked") || e.to_string().contains("busy") =>
                    {
                        busy.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(e) => panic!("a storm writer failed otherwise: {e}"),
                };
            }
        }));
        let payments = futures::future::join_all(paying.iter().map(|o| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let event = app.captured(o, PRICE);
            let r = until_answered("webhook", || app.deliver(&event)).await;
            assert_eq!(r.status, 200, "{o}: {}", r.body);
        }));
        let stormy = async {
            futures::join!(hold, payments);
            tokio::time::sleep(Duration::from_secs(2)).await;
            storm_over.store(true, Ordering::SeqCst);
        };
        futures::join!(stormy, storm);
        for o in &timing_out {
            ends(&app, o, "cancelled").await;
        }
        for o in &paying {
            ends(&app, o, "fulfilled").await;
        }
        (paying, timing_out)
    };
    let (paid, unpaid) = tokio::select! {
        r = work => r,
        () = app.supervise(&[], &deaths) => unreachable!("the supervisor runs until dropped"),
    };
    let busy = busy.load(Ordering::SeqCst);
    assert!(busy > 0, "the storm never met SQLITE_BUSY");
    one_capture_each(&app, &paid, &unpaid);
    sold_exactly(&app, "ebook", paid.len()).await;
    app.assert_invariants().await;
    println!(
        "sqlite busy storm: 60 orders, write lock held 16 s, {} storm commits, {busy} SQLITE_BUSY, {} worker restarts, 0 double effects, audit clean",
        storm_writes.load(Ordering::SeqCst),
        deaths.load(Ordering::SeqCst)
    );
}

/// Sends the request that `build` makes for an API base, first to `bases[first]`, and to the
/// other API when one does not answer (refused connection, 503), as a load balancer would,
/// with the same idempotency key, until one answers.
async fn balanced<F>(bases: &[String; 2], first: usize, build: F) -> Reply
where
    F: Fn(&str) -> reqwest::RequestBuilder,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    for attempt in 0.. {
        let base = &bases[(first + attempt) % 2];
        if let Ok(res) = build(base).send().await {
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if status != 503 {
                return Reply { status, body };
            }
        }
        assert!(Instant::now() < deadline, "no API answered for 5 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Two `orderflow worker` and two `orderflow api` processes against one Temporal and one
/// database, clients spread over both APIs. One worker and one API are killed with SIGKILL a
/// third of the way into 60 orders: every order answered 201 exists once, and ends paid,
/// cancelled or timed out as its client said, with one capture per paid order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_everything_one_of_each_killed_loses_and_doubles_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(WorkerMode::External).await;
    sell_ebooks(&app).await;
    let ports = [
        devserver::free_port().unwrap(),
        devserver::free_port().unwrap(),
    ];
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let mut apis: Vec<_> = ports
        .iter()
        .map(|p| {
            app.process(
                &["api"],
                &[("ORDERFLOW_HTTP_ADDR", &format!("127.0.0.1:{p}"))],
            )
        })
        .collect();
    let mut workers = vec![app.worker_process(), app.worker_process()];
    for base in &bases {
        app.eventually(60, "an API process", || async {
            reqwest::get(format!("{base}/healthz"))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    let created = AtomicUsize::new(0);
    // Ten orders created: the kill; the kill done: the rest of the load.
    let (ten_created, mut wait_ten) = tokio::sync::watch::channel(false);
    let (killed, wait_killed) = tokio::sync::watch::channel(false);
    let token = common::admin_token();
    let load = futures::future::join_all((0..60usize).map(|i| {
        let (bases, token, created, ten_created) = (&bases, &token, &created, &ten_created);
        let (app, mut wait_killed) = (&app, wait_killed.clone());
        async move {
            if i >= 20 {
                wait_killed.wait_for(|k| *k).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis((i % 20) as u64 * 50)).await;
            let timeout = if i % 3 == 0 { 5 } else { 3600 };
            let body = json!({"user_id": format!("two-{i}"), "items": [{"sku": "ebook", "quantity": 1}], "payment_timeout_secs": timeout});
            let r = balanced(bases, i % 2, |base| {
                app.http
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("two-{i}"))
                    .json(&body)
            })
            .await;
            assert!(matches!(r.status, 200 | 201), "order {i}: {} {}", r.status, r.body);
            let order_id = r.body["order_id"].as_str().unwrap().to_owned();
            if created.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                ten_created.send_replace(true);
            }
            match i % 3 {
                1 => {
                    let event = app.captured(&order_id, PRICE);
                    let body = serde_json::to_vec(&event).unwrap();
                    let r = balanced(bases, i % 2, |base| {
                        let sig = orderflow_api::signature::sign(common::SECRET, orderflow_store::now_ms() / 1000, &body);
                        app.http
                            .post(format!("{base}/v1/payments/webhook"))
                            .header("content-type", "application/json")
                            .header("Payment-Signature", sig)
                            .body(body.clone())
                    })
                    .await;
                    assert_eq!(r.status, 200, "{order_id}: {}", r.body);
                }
                2 => {
                    let r = balanced(bases, i % 2, |base| {
                        app.http
                            .post(format!("{base}/v1/orders/{order_id}/cancel"))
                            .bearer_auth(token)
                            .json(&json!({"reason": "user"}))
                    })
                    .await;
                    assert_eq!(r.status, 200, "{order_id}: {}", r.body);
                }
                _ => {}
            }
            (order_id, i % 3)
        }
    }));
    // A third of the way in: SIGKILL to the first API and the first worker.
    let kill = async {
        wait_ten.wait_for(|t| *t).await.unwrap();
        tokio::task::block_in_place(|| {
            apis.remove(0).kill();
            workers.remove(0).kill();
        });
        killed.send_replace(true);
    };
    let (placed, ()) = futures::join!(load, kill);

    for (o, path) in &placed {
        ends(&app, o, if *path == 1 { "fulfilled" } else { "cancelled" }).await;
    }
    let ids: std::collections::BTreeSet<&String> = placed.iter().map(|(o, _)| o).collect();
    assert_eq!(ids.len(), 60, "60 keys, 60 orders");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 60, "no order doubled");
    each_effect_once(&app, &placed).await;
    println!(
        "two of everything: 60 orders over 2 APIs and 2 workers, one of each killed, 0 lost, 0 doubled, audit clean"
    );
}
