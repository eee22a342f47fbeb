//! Running it (issue 5): the reconciliation Schedule repairs an order whose workflow was
//! terminated by hand and reports what it cannot repair; SIGTERM during load loses no order.
//! Real dev server (and its `temporal` CLI), real database, real `orderflow` processes.

mod common;

use common::{TestApp, spawn_app};
use orderflow_workflows::workflow_id;
use serde_json::{Value, json};
use std::time::Duration;

fn id(v: &Value) -> String {
    v["order_id"].as_str().expect("order_id").to_owned()
}

fn terminate_by_hand(app: &TestApp, order_id: &str) {
    app.temporal_cli(&[
        "workflow",
        "terminate",
        "--workflow-id",
        &workflow_id(order_id),
        "--reason",
        "operator mistake",
    ]);
}

/// With `ORDER_CAPTURE=at_shipment`: of the two paid lamps, one is paid by an authorization
/// (checkout) and one by a payment captured at once (its webhook); the resumed run of each
/// ships it, and the authorization is captured first (the audit refuses a shipped one that
/// was not).
#[tokio::test]
async fn reconciliation_repairs_a_terminated_order_and_reports_what_it_cannot_repair() {
    let app = common::spawn_app_tuned(common::Tuning::at_shipment()).await;
    app.put_sku("book", 1500, 10).await;
    app.put_sku_with(
        "lamp",
        json!({"price": 1000, "stock": 10, "kind": "physical"}),
    )
    .await;
    app.credit_wallet("alice", 1000).await;
    app.credit_points("alice", 100).await;
    let pending = id(&app
        .create_order(
            "rec-pending",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 2}], "points": 100, "wallet_amount": 400}),
        )
        .await
        .body);
    let paid = id(&app
        .create_order(
            "rec-paid",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}]}),
        )
        .await
        .body);
    let authorized = app.checkout_and_pay(&paid, None).await;
    app.wait_shipment(&paid, "pending").await;
    let captured = id(&app
        .create_order(
            "rec-captured",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}]}),
        )
        .await
        .body);
    app.deliver(&app.captured(&captured, 1000)).await;
    app.wait_shipment(&captured, "pending").await;
    terminate_by_hand(&app, &pending);
    terminate_by_hand(&app, &paid);
    terminate_by_hand(&app, &captured);
    assert_eq!(
        app.sku("book").await["reserved"],
        2,
        "held by a dead workflow"
    );

    let schedule = app.reconcile_schedule().await;
    // Visibility of the terminations is eventually consistent: trigger until it is repaired.
    let o = app
        .eventually(60, "the reconciliation repair", || async {
            app.reconcile_now(&schedule, 2).await;
            let o = app.order(&pending).await;
            (o["status"] == "cancelled").then_some(o)
        })
        .await;
    assert_eq!(o["cancel_reason"], "reconciled");
    assert_eq!(app.sku("book").await["reserved"], 0, "the stock is back");
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["frozen"],
        0,
        "the wallet is back"
    );
    let log = orderflow_activities::reconcile::log_for(&app.db, &pending)
        .await
        .unwrap();
    assert!(
        log.iter().any(|(action, _)| action == "repaired"),
        "{log:?}"
    );
    // The paid orders' workflows are resumed: fulfilment goes on, and they ship.
    for order in [&paid, &captured] {
        let log = app
            .eventually(30, "the repair of the paid order", || async {
                let log = orderflow_activities::reconcile::log_for(&app.db, order)
                    .await
                    .unwrap();
                log.iter().any(|(a, _)| a == "repaired").then_some(log)
            })
            .await;
        assert!(log[0].1.contains("resumed"), "{log:?}");
        let shipped = app
            .eventually(30, "the resumed workflow to ship", || async {
                let r = app
                    .as_admin()
                    .post(&format!("/v1/admin/orders/{order}/ship"), json!({}))
                    .await;
                (r.status == 200).then_some(r)
            })
            .await;
        assert_eq!(shipped.body["status"], "fulfilled", "{}", shipped.body);
    }
    let at_provider = app.sandbox.payments();
    let authorization = at_provider
        .iter()
        .find(|p| p.payment_id == authorized)
        .unwrap();
    assert_eq!(
        (authorization.status.as_str(), authorization.captured),
        ("captured", 1000),
        "the resumed run captured the authorization when it shipped"
    );
    let events = app.events(&pending).await;
    assert!(
        events.iter().any(|e| e["reason"] == "reconciled"
            && e["step"].as_str().unwrap().starts_with("reconciled:")),
        "{events:?}"
    );
    schedule.delete(Default::default()).await.unwrap();
    app.assert_invariants().await;
}

/// A pending order whose workflow was terminated, and whose payment arrived while nothing ran:
/// reconciliation finds the payment and the order ends paid and fulfilled, not cancelled. A
/// second one was paid at the provider but its webhook never came: the provider's record pays
/// it too.
#[tokio::test]
async fn reconciliation_releases_holds_whose_order_was_never_recorded() {
    use orderflow_activities::funds::{self, POINTS};
    use orderflow_workflows::model::{OrderLine, ReserveFunds, ReserveStock};
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    app.credit_points("alice", 500).await;
    // A workflow reserved stock and points, then was terminated before it recorded its order:
    // no order row, so no order repair can find the holds. (Reserved through the activities'
    // own store functions, then aged past the create timeout.)
    let orphan = "ord_orphan";
    let stock = ReserveStock {
        order_id: orphan.into(),
        items: vec![OrderLine {
            sku: "book".into(),
            quantity: 2,
        }],
        user_id: "alice".into(),
        max_open_orders: None,
    };
    orderflow_activities::stock::reserve(&app.db, &stock)
        .await
        .unwrap();
    let points = ReserveFunds {
        order_id: orphan.into(),
        user_id: "alice".into(),
        amount: 300,
    };
    funds::reserve(&app.db, POINTS, &points).await.unwrap();
    sqlx::query("UPDATE holds SET created_at = created_at - 660000 WHERE order_id = $1")
        .bind(orphan)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(app.sku("book").await["reserved"], 2);

    let schedule = app.reconcile_schedule().await;
    app.reconcile_now(&schedule, 0).await;
    app.eventually(60, "the orphan holds released", || async {
        let sku = app.sku("book").await;
        (sku["reserved"] == 0 && sku["available"] == 10).then_some(())
    })
    .await;
    let points = app.as_user("alice").get("/v1/points/alice").await;
    assert_eq!(points.body["points"], 500, "{}", points.body);
    assert_eq!(points.body["reserved"], 0, "{}", points.body);
    schedule.delete(Default::default()).await.unwrap();
    // The run logs its repair after the release, in its own activity: wait for the log.
    let report = app
        .eventually(
            30,
            "the release listed as a repair in the audit",
            || async {
                let report = app.audit().await;
                report
                    .repairs
                    .iter()
                    .any(|r| r.order_id == orphan)
                    .then_some(report)
            },
        )
        .await;
    assert!(report.is_clean(), "{}", report.render());
    let metrics = app.scrape(&format!("{}/metrics", app.base)).await;
    assert!(
        metrics.contains("orderflow_reconcile_actions_total{action=\"repaired\"}"),
        "{metrics}"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn reconciliation_pays_a_terminated_order_that_was_paid_instead_of_cancelling_it() {
    let app = spawn_app().await;
    app.put_sku("ebook", 800, 10).await;
    app.credit_wallet("alice", 300).await;
    let order = id(&app
        .create_order(
            "rec-paid-while-dead",
            json!({"user_id": "alice", "items": [{"sku": "ebook", "quantity": 1}], "wallet_amount": 300}),
        )
        .await
        .body);
    let silent = id(&app
        .create_order(
            "rec-paid-silently",
            json!({"user_id": "alice", "items": [{"sku": "ebook", "quantity": 1}]}),
        )
        .await
        .body);
    terminate_by_hand(&app, &order);
    terminate_by_hand(&app, &silent);
    // The payer pays while no workflow runs: the webhook hands it to its decision, which holds
    // it for reconciliation. The other payment is captured, but its webhook never comes.
    let event = app.captured(&order, 500);
    let r = app.deliver(&event).await;
    assert_eq!(r.body["status"], "workflow_missing", "{}", r.body);
    let unreported = app.captured(&silent, 800);

    let schedule = app.reconcile_schedule().await;
    for o in [&order, &silent] {
        let done = app
            .eventually(90, "the repair", || async {
                app.reconcile_now(&schedule, 2).await;
                let v = app.order(o).await;
                (v["status"] == "fulfilled").then_some(v)
            })
            .await;
        assert_eq!(done["payments"].as_array().unwrap().len(), 1, "{done}");
        assert!(done["refunds"].as_array().unwrap().is_empty(), "{done}");
    }
    assert_eq!(
        app.order(&order).await["payments"][0]["payment_id"],
        event.payment_id.as_str()
    );
    assert_eq!(
        app.order(&silent).await["payments"][0]["payment_id"],
        unreported.payment_id.as_str()
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["frozen"],
        0
    );
    schedule.delete(Default::default()).await.unwrap();
    app.assert_invariants().await;
}

/// A worker whose memory passes `ORDERFLOW_WORKER_MAX_RSS_MB` stops as on SIGTERM and exits with
/// an error that names the setting, so that its supervisor starts a fresh one; the fresh one
/// serves orders as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_memory_limit_stops_and_exits_with_an_error_for_its_restart() {
    let app = common::spawn_app_with(common::WorkerMode::External).await;
    app.put_sku("book", 100, 10).await;
    let log = common::tempdir("worker-rss-limit").join("worker.log");
    // Every process is over 1 MB: the first check stops it.
    let mut limited = app.process_logging_to(
        &["worker"],
        &[("ORDERFLOW_WORKER_MAX_RSS_MB", "1")],
        Some(&log),
    );
    let status = limited
        .exited_within(90)
        .expect("the worker over its memory limit did not stop");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "it must exit with an error: {status}\n{said}"
    );
    assert!(
        said.contains("over ORDERFLOW_WORKER_MAX_RSS_MB=1"),
        "the error names the setting:\n{said}"
    );

    let _fresh = app.worker_process();
    let order = id(&app
        .create_order(
            "after-rss-limit",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await
        .body);
    app.checkout_and_pay(&order, None).await;
    app.wait_status(&order, "fulfilled").await;
    app.assert_invariants().await;
}

/// SIGTERM to the API and the worker in the middle of a stream of creates and payments: every
/// order the API answered 201 for exists, none is lost half-way, and once a worker is back every
/// one ends wholly paid or wholly cancelled with the invariants intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_order() {
    let app = common::spawn_app_with(common::WorkerMode::External).await;
    app.put_sku("book", 100, 10_000).await;
    let port = orderflow::devserver::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut api = app.process(&["api"], &[("ORDERFLOW_HTTP_ADDR", &addr)]);
    let mut worker = app.worker_process();
    let base = format!("http://{addr}");
    app.eventually(60, "the API process", || async {
        reqwest::get(format!("{base}/healthz"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    // The stop waits for the first order to be created (a slow machine may take seconds for the
    // first one), and the second half of the load is sent only then, so that it is in flight
    // while both processes stop. A fixed delay raced the first order on a loaded CI machine.
    let (first_created, created_rx) = tokio::sync::watch::channel(false);
    let mut stop_rx = created_rx.clone();
    let load = (0..40u64).map(|i| {
        let (app, base, first_created) = (&app, base.clone(), first_created.clone());
        let mut created_rx = created_rx.clone();
        async move {
            if i >= 20 {
                let _ = created_rx.wait_for(|created| *created).await;
            }
            tokio::time::sleep(Duration::from_millis((i % 20) * 25)).await;
            // A request cut off by the stop (connection refused or closed) made no order: a
            // client retries it with the same key.
            let sent = app
                .http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(common::admin_token())
                .header("Idempotency-Key", format!("load-{i}"))
                .json(&json!({"user_id": format!("u{i}"), "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 3}))
                .send()
                .await;
            let r = match sent {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    common::Reply { status, body }
                }
                Err(_) => common::Reply { status: 0, body: Value::Null },
            };
            if r.status == 201 {
                first_created.send_replace(true);
            }
            if r.status == 201 && i % 2 == 0 {
                // Half of them get paid, by a webhook straight to the API being stopped.
                let event = app.captured(&id(&r.body), 100);
                let body = serde_json::to_vec(&event).unwrap();
                let sig = orderflow_api::signature::sign(common::SECRET, orderflow_store::now_ms() / 1000, &body);
                let _ = app
                    .http
                    .post(format!("{base}/v1/payments/webhook"))
                    .header("Payment-Signature", sig)
                    .body(body)
                    .send()
                    .await;
            }
            (i, r.status, r.body)
        }
    });
    // Both get SIGTERM at once, as in a rolling deploy.
    let stop = async {
        tokio::time::timeout(
            Duration::from_secs(120),
            stop_rx.wait_for(|created| *created),
        )
        .await
        .expect("the first order was created within 2 minutes")
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| {
            unsafe {
                libc::kill(api.0.id() as i32, libc::SIGTERM);
            }
            let worker_exit = worker.terminate(40);
            let api_exit = api.terminate(40);
            (worker_exit, api_exit)
        })
    };
    let (results, (worker_exit, api_exit)) = tokio::join!(futures::future::join_all(load), stop);
    assert!(
        worker_exit.is_some_and(|s| s.success()),
        "the worker stopped cleanly: {worker_exit:?}"
    );
    assert!(
        api_exit.is_some_and(|s| s.success()),
        "the API stopped cleanly: {api_exit:?}"
    );

    let created: Vec<String> = results
        .iter()
        .filter(|(_, status, _)| *status == 201)
        .map(|(_, _, body)| id(body))
        .collect();
    let refused = results.iter().filter(|(_, s, _)| *s != 201).count();
    // Whatever was not a 201 was refused cleanly (503 while stopping) or never reached the API.
    for (i, status, body) in &results {
        assert!(
            [201, 503, 0].contains(status),
            "request {i}: {status} {body}"
        );
    }
    println!(
        "SIGTERM during load: {} orders created, {refused} requests refused or cut off",
        created.len()
    );
    assert!(
        !created.is_empty(),
        "some orders were created before the stop"
    );
    // Every 201 is a real order.
    for order_id in &created {
        app.order(order_id).await;
    }
    // A worker comes back; every order settles one way or the other.
    let _worker = app.worker_process();
    for order_id in &created {
        let o = app
            .eventually(60, "a settled order", || async {
                let o = app.order(order_id).await;
                ["fulfilled", "cancelled"]
                    .contains(&o["status"].as_str().unwrap())
                    .then_some(o)
            })
            .await;
        let _ = o;
    }
    for order_id in &created {
        app.settled(order_id).await;
    }
    // Some webhooks died with the API and no provider redelivers them here: reconciliation (as
    // `orderflow worker --schedules` runs it every minute) finds those payments in the
    // provider's listing and hands them on, and each ends refunded (its order timed out).
    let schedule = app.reconcile_schedule().await;
    let report = app
        .eventually(90, "every captured payment applied or refunded", || async {
            app.reconcile_now(&schedule, 2).await;
            let report = app.audit().await;
            (report.is_clean() && report.in_progress.is_empty()).then_some(report)
        })
        .await;
    println!(
        "after SIGTERM: captured {}, applied {}, refunded {}, stranded {}",
        report.captured.count, report.applied.count, report.refunded.count, report.stranded.count
    );
    schedule.delete(Default::default()).await.unwrap();
    app.assert_invariants().await;
}

/// `PaymentDeadline` is never cleared (the server refuses the SDK's unset for a Datetime), so
/// the README's query pairs it with `OrderStatus`: that query finds the waiting order and not
/// the paid one, whose deadline is still set.
#[tokio::test]
async fn the_documented_deadline_query_finds_only_orders_still_waiting() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let mut orders = Vec::new();
    for (user, key) in [("alice", "dq-1"), ("bob", "dq-2")] {
        let body = json!({"user_id": user, "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 600});
        let r = app.create_order(key, body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        orders.push(id(&r.body));
    }
    let (waiting, paid) = (&orders[0], &orders[1]);
    app.checkout_and_pay(paid, None).await;
    app.wait_status(paid, "fulfilled").await;
    let before = rfc3339(orderflow_store::now_ms() + 3_600_000);
    let documented = format!(
        "OrderStatus IN ('pending_payment', 'checkout_open') AND PaymentDeadline < '{before}'"
    );
    let found = app
        .eventually(30, "visibility shows both orders' last status", || async {
            let all = app.workflows_where(&format!("PaymentDeadline < '{before}'"));
            (all.len() == 2).then_some(app.workflows_where(&documented))
        })
        .await;
    assert_eq!(found, vec![workflow_id(waiting)], "the documented query");
    assert_eq!(app.cancel(waiting, "user").await.status, 200);
    app.assert_invariants().await;
}

/// Unix milliseconds as RFC 3339 UTC, the form visibility queries take.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .expect("a time in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatted")
}
