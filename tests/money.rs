//! Money is never stranded (issue 9): every payment the provider captured ends applied to one
//! order or refunded exactly once, whatever its webhook named, whatever Temporal remembers, and
//! the two-way audit says so. Real dev server, real database, real provider sandbox over HTTP.
//! Each test prints its figures: payments captured, applied, refunded and stranded.

mod common;

use common::{TestApp, spawn_app};
use orderflow_activities::payments::{InboxEvent, receive};
use orderflow_sandbox::{Fault, Op, ScriptedFault};
use orderflow_workflows::payment_workflow_id;
use serde_json::{Value, json};
use std::time::Duration;

fn id(v: &Value) -> String {
    v["order_id"].as_str().expect("order_id").to_owned()
}

/// An order of one 1000 book for `user`, pending payment.
async fn pending_order(app: &TestApp, user: &str, key: &str) -> String {
    let r = app
        .create_order(
            key,
            json!({"user_id": user, "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    id(&r.body)
}

/// Refunds the provider performed for `payment_id`.
fn provider_refunds(app: &TestApp, payment_id: &str) -> usize {
    app.sandbox
        .refunds()
        .iter()
        .filter(|r| r.payment_id == payment_id)
        .count()
}

async fn refunded_once(app: &TestApp, payment_id: &str, secs: u64) {
    app.eventually(secs, &format!("the refund of {payment_id}"), || async {
        (provider_refunds(app, payment_id) == 1).then_some(())
    })
    .await;
}

/// The audit once nothing is in flight: clean, and its figures printed.
async fn audited(app: &TestApp, scenario: &str) -> orderflow_activities::audit::MoneyReport {
    let report = app.audit_settled(60).await;
    println!(
        "{scenario}: captured {}, applied {}, refunded {}, stranded {}",
        report.captured.count, report.applied.count, report.refunded.count, report.stranded.count
    );
    assert!(
        report.is_clean() && report.in_progress.is_empty(),
        "{}",
        report.render()
    );
    report
}

async fn steps(app: &TestApp, order_id: &str) -> Vec<String> {
    app.events(order_id)
        .await
        .iter()
        .map(|e| format!("{} {}", e["step"].as_str().unwrap(), e["reason"]))
        .collect()
}

#[tokio::test]
async fn payments_no_order_can_take_are_each_refunded_exactly_once() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let a = pending_order(&app, "alice", "m-a").await;
    let b = pending_order(&app, "bob", "m-b").await;
    let c = pending_order(&app, "carol", "m-c").await;

    // 1. An order nobody created: held for the hold (3 s in tests), owned by its decision.
    let stray = app.captured("ord_nobody", 700);
    let r = app.deliver(&stray).await;
    assert_eq!(r.body["status"], "unknown_order", "{}", r.body);
    let report = app.audit().await;
    let held = report
        .in_progress
        .iter()
        .find(|f| f.payment_id == stray.payment_id)
        .unwrap_or_else(|| panic!("held and in flight:\n{}", report.render()));
    assert!(
        ["decision_holding", "handed_to_decision"].contains(&held.state),
        "{}",
        report.render()
    );
    assert_eq!(held.owner, payment_workflow_id(&stray.payment_id));
    assert_eq!(
        provider_refunds(&app, &stray.payment_id),
        0,
        "not before the hold"
    );

    // 2. The payer paid a's session, and the provider's webhook names b.
    let session = app.checkout(&a).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let paid = app
        .pay(
            session.body["pay_url"].as_str().unwrap(),
            Some(&format!("webhook_order_id={b}")),
        )
        .await;
    let misrouted = paid.body["payment_id"].as_str().unwrap().to_owned();

    // 3. 999 for c's 1000: refunded promptly, while c is still pending.
    let short = app.captured(&c, 999);
    let r = app.deliver(&short).await;
    assert_eq!(r.body["status"], "amount_mismatch", "{}", r.body);
    refunded_once(&app, &short.payment_id, 30).await;
    assert_eq!(app.order(&c).await["status"], "pending_payment");

    refunded_once(&app, &misrouted, 30).await;
    refunded_once(&app, &stray.payment_id, 30).await;
    for order in [&a, &b] {
        assert_eq!(
            app.order(order).await["status"],
            "pending_payment",
            "a misrouted payment pays neither order"
        );
    }
    // Visible on the order the event named.
    let b_steps = steps(&app, &b).await;
    assert!(
        b_steps
            .iter()
            .any(|s| s.starts_with(&format!("payment:{misrouted}:held"))
                && s.contains("order_mismatch")),
        "{b_steps:?}"
    );
    assert!(
        steps(&app, &c)
            .await
            .iter()
            .any(|s| s.starts_with(&format!("refund:{}:succeeded", short.payment_id))),
    );

    // The same stray payment reported again (another event id): still one refund.
    let mut again = stray.clone();
    again.event_id = format!("{}-again", stray.event_id);
    assert_eq!(app.deliver(&again).await.status, 200);
    for order in [&a, &b, &c] {
        assert_eq!(app.cancel(order, "user").await.status, 200);
    }
    let report = audited(&app, "unknown, wrong order, wrong amount").await;
    assert_eq!((report.captured.count, report.refunded.count), (3, 3));
    for p in [&stray.payment_id, &misrouted, &short.payment_id] {
        assert_eq!(provider_refunds(&app, p), 1, "{p}");
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_refund_whose_history_is_gone_is_not_paid_twice() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "h-1").await;
    assert_eq!(app.cancel(&order, "user").await.status, 200);
    app.settled(&order).await;
    // A payment after the order's workflow closed goes to its decision, which refunds it.
    let late = app.captured(&order, 1000);
    let r = app.deliver(&late).await;
    assert_eq!(r.body["status"], "refund_started", "{}", r.body);
    refunded_once(&app, &late.payment_id, 30).await;
    app.eventually(30, "the decision to end", || async {
        let o = app.order(&order).await;
        o["refunds"][0]["status"]
            .as_str()
            .filter(|s| *s == "succeeded")
            .map(|_| ())
    })
    .await;
    let calls = app.sandbox.requests(Op::Refund);

    // Temporal forgets the decision (its history deleted), then the webhook is replayed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.temporal_cli(&[
        "workflow",
        "delete",
        "--yes",
        "--workflow-id",
        &payment_workflow_id(&late.payment_id),
    ]);
    let mut replayed = late.clone();
    replayed.event_id = format!("{}-replayed", late.event_id);
    let r = app.deliver(&replayed).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A refund run with the same payment, started by hand: the row is the truth for it too.
    let request = orderflow_workflows::model::RefundPayment {
        order_id: order.clone(),
        user_id: "alice".into(),
        payment: orderflow_workflows::model::PaymentReceived {
            payment_id: late.payment_id.clone(),
            event_id: late.event_id.clone(),
            amount: 1000,
            currency: "USD".into(),
            capture_before_ms: None,
        },
        reason: "order_cancelled".into(),
        requested_at_ms: orderflow_store::now_ms(),
        idempotency_key: None,
    };
    let outcome = app
        .client
        .start_workflow(
            orderflow_workflows::RefundWorkflow::run,
            request,
            temporalio_client::WorkflowStartOptions::new(
                app.task_queue.clone(),
                format!("refund-{}-by-hand", late.payment_id),
            )
            .build(),
        )
        .await
        .unwrap()
        .get_result(Default::default())
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            orderflow_workflows::model::RefundOutcome::Succeeded { .. }
        ),
        "{outcome:?}"
    );
    audited(&app, "history gone, webhook replayed").await;
    assert_eq!(provider_refunds(&app, &late.payment_id), 1);
    assert_eq!(
        app.sandbox.requests(Op::Refund),
        calls,
        "the provider was not even asked again"
    );
}

#[tokio::test]
async fn a_refused_refund_is_shown_to_ops_and_retried_with_a_new_key() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "f-1").await;
    assert_eq!(app.cancel(&order, "user").await.status, 200);
    app.settled(&order).await;
    app.sandbox.add_fault(ScriptedFault {
        op: Op::Refund,
        times: 1,
        fault: Fault {
            status: Some(400),
            ..Fault::default()
        },
    });
    let late = app.captured(&order, 1000);
    assert_eq!(app.deliver(&late).await.status, 200);
    let report = app
        .eventually(30, "the refusal in the audit", || async {
            let report = app.audit().await;
            report
                .discrepancies
                .iter()
                .any(|d| d.problem == "refund_failed" && d.payment_id == late.payment_id)
                .then_some(report)
        })
        .await;
    assert_eq!(report.stranded.count, 1, "{}", report.render());
    let retry = app
        .as_admin()
        .post(
            &format!("/v1/admin/refunds/{}/retry", late.payment_id),
            json!({}),
        )
        .await;
    assert_eq!(
        (retry.status, retry.body["attempt"].as_i64()),
        (202, Some(2)),
        "{}",
        retry.body
    );
    refunded_once(&app, &late.payment_id, 30).await;
    let key = app.sandbox.refunds()[0].idempotency_key.clone();
    assert_eq!(key, format!("refund-{}-2", late.payment_id));
    audited(&app, "refused, then retried").await;
    let again = app
        .as_admin()
        .post(
            &format!("/v1/admin/refunds/{}/retry", late.payment_id),
            json!({}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "refund_already_succeeded")
    );
    let user = app
        .as_user("alice")
        .call(
            "POST",
            &format!("/v1/admin/refunds/{}/retry", late.payment_id),
            None,
        )
        .await;
    assert_eq!(user.status, 403, "ops only");
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_inbox_event_never_handed_on_is_redriven() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    // a: the API recorded the event and died before handing it on. b: the same, and an operator
    // terminated b's workflow too. The provider will redeliver neither.
    let a = pending_order(&app, "alice", "r-1").await;
    let b = pending_order(&app, "bob", "r-2").await;
    app.temporal_cli(&[
        "workflow",
        "terminate",
        "--workflow-id",
        &orderflow_workflows::workflow_id(&b),
        "--reason",
        "operator mistake",
    ]);
    let mut events = Vec::new();
    for order in [&a, &b] {
        let event = app.captured(order, 1000);
        let received = InboxEvent {
            event_id: event.event_id.clone(),
            event_type: event.kind.clone(),
            order_id: order.to_string(),
            payment_id: event.payment_id.clone(),
            amount: 1000,
            currency: "USD".into(),
            received_at: orderflow_store::now_ms() - 5_000,
            session_id: event.session_id.clone(),
            capture_before: None,
        };
        receive(&app.db, &received).await.unwrap();
        events.push(event);
    }
    let report = app.audit().await;
    assert!(
        report
            .in_progress
            .iter()
            .all(|f| f.state == "inbox_received")
            && report.in_progress.len() == 2,
        "{}",
        report.render()
    );
    let started = std::time::Instant::now();
    let schedule = app.reconcile_schedule().await;
    app.reconcile_now(&schedule, 0).await;
    app.wait_status(&a, "fulfilled").await;
    // b's workflow is gone: the re-drive hands the payment on, and reconciliation resumes b
    // from the database with it. Within 2 minutes, re-driving again if need be.
    app.eventually(120, "b paid by its re-driven payment", || async {
        if app.order(&b).await["status"] == "fulfilled" {
            return Some(());
        }
        app.reconcile_now(&schedule, 2).await;
        None
    })
    .await;
    println!(
        "re-drive: both orders fulfilled {:.1} s after the first run",
        started.elapsed().as_secs_f64()
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM webhook_inbox WHERE event_id = $1")
            .bind(&events[0].event_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(outcome, "signalled");
    let processed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox WHERE processed_at IS NOT NULL")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(processed, 2, "both events processed");
    schedule.delete(Default::default()).await.unwrap();
    let report = audited(&app, "re-driven (one workflow terminated)").await;
    assert_eq!(report.applied.count, 2);
    assert_eq!(report.refunded.count, 0);
    assert!(
        report.repairs.iter().any(|r| r.order_id == b),
        "the resume of b is a repair in the audit:\n{}",
        report.render()
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn webhooks_with_impossible_amounts_or_currencies_are_refused_and_record_nothing() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "z-1").await;
    for (amount, currency, code) in [
        (0, "USD", "invalid_amount"),
        (-5, "USD", "invalid_amount"),
        (1000, "ZZZ", "invalid_currency"),
        (1000, "usd", "invalid_currency"),
    ] {
        let body = json!({"event_id": format!("evt_{amount}_{currency}"), "type": "payment.succeeded",
            "order_id": order, "payment_id": "pay_x", "amount": amount, "currency": currency});
        let r = app.webhook(serde_json::to_vec(&body).unwrap()).await;
        assert_eq!((r.status, r.code()), (422, code), "{}", r.body);
    }
    let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(inbox, 0);
    assert_eq!(app.cancel(&order, "user").await.status, 200);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_constraint_violation_fails_at_once_and_the_audit_names_the_stranded_payment() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "c-1").await;
    let short = app.captured(&order, 998);
    // A row that takes the refund's idempotency key: the refund's insert violates UNIQUE.
    sqlx::query(
        "INSERT INTO refunds (payment_id, order_id, amount, currency, status, reason, idempotency_key, created_at, updated_at)
         VALUES ('pay_other', 'ord_other', 1, 'USD', 'failed', 'test', $1, 0, 0)",
    )
    .bind(format!("refund-{}", short.payment_id))
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(app.deliver(&short).await.body["status"], "amount_mismatch");
    // Not retried for ever: the decision fails, visibly, naming the code.
    let handle = app
        .client
        .get_workflow_handle::<orderflow_workflows::PaymentDecisionWorkflow>(payment_workflow_id(
            &short.payment_id,
        ));
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        handle.get_result(Default::default()),
    )
    .await
    .expect("the decision ends within a minute");
    let message = format!("{:?}", failed.expect_err("it fails"));
    assert!(message.contains("constraint_violation"), "{message}");
    let report = app.audit().await;
    assert!(
        report
            .discrepancies
            .iter()
            .any(|d| d.payment_id == short.payment_id && d.problem == "owner_gone"),
        "{}",
        report.render()
    );
    // The operator removes the bad row and the webhook is replayed: refunded once.
    sqlx::query("DELETE FROM refunds WHERE payment_id = 'pay_other'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut replayed = short.clone();
    replayed.event_id = format!("{}-replayed", short.event_id);
    assert_eq!(app.deliver(&replayed).await.status, 200);
    refunded_once(&app, &short.payment_id, 30).await;
    assert_eq!(app.cancel(&order, "user").await.status, 200);
    audited(&app, "constraint violation, repaired").await;
}

#[tokio::test]
async fn an_admin_order_paid_offline_passes_the_audit_and_its_refund_is_owed_outside() {
    let app = spawn_app().await;
    app.put_sku_with(
        "lamp",
        json!({"price": 1200, "stock": 5, "kind": "physical"}),
    )
    .await;
    let r = app
        .as_admin()
        .post_keyed("/v1/admin/orders", "offline-1", json!({"user_id": "dora", "items": [{"sku": "lamp", "quantity": 1}], "payment_method": "offline"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let order = id(&r.body);
    app.wait_shipment(&order, "pending").await;
    let o = app.order(&order).await;
    assert_eq!(
        (o["status"].as_str(), o["payments"][0]["status"].as_str()),
        (Some("paid"), Some("captured"))
    );
    // Paid offline: nothing at the provider, and the audit does not expect anything there.
    let report = audited(&app, "offline, paid").await;
    assert_eq!(report.captured.count, 0);

    assert_eq!(app.cancel(&order, "admin").await.status, 200);
    let o = app.wait_status(&order, "cancelled").await;
    assert_eq!(o["refunds"][0]["status"], "failed", "{o}");
    let report = audited(&app, "offline, cancelled").await;
    assert_eq!(
        report
            .offline_refunds
            .iter()
            .map(|d| d.payment_id.as_str())
            .collect::<Vec<_>>(),
        vec![format!("offline-{order}").as_str()],
        "owed back outside orderflow, and said so"
    );
    let retry = app
        .as_admin()
        .post(
            &format!("/v1/admin/refunds/offline-{order}/retry"),
            json!({}),
        )
        .await;
    assert_eq!((retry.status, retry.code()), (409, "refund_not_retryable"));
    assert!(app.sandbox.refunds().is_empty());
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_payment_whose_every_webhook_was_lost_is_found_at_the_provider() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "lost-1").await;
    let cancelled = pending_order(&app, "bob", "lost-2").await;
    assert_eq!(app.cancel(&cancelled, "user").await.status, 200);
    // Captured at the provider; no webhook ever arrives.
    let paid = app.captured(&order, 1000);
    let late = app.captured(&cancelled, 1000);
    let report = app.audit().await;
    assert_eq!(
        report
            .discrepancies
            .iter()
            .filter(|d| d.problem == "no_webhook")
            .count(),
        2,
        "{}",
        report.render()
    );
    let schedule = app.reconcile_schedule().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.eventually(60, "the sweep", || async {
        app.reconcile_now(&schedule, 1).await;
        (app.order(&order).await["status"] == "fulfilled"
            && provider_refunds(&app, &late.payment_id) == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        app.order(&order).await["payments"][0]["payment_id"],
        paid.payment_id.as_str()
    );
    // The finished sweep left its watermark: the next one reads only what came since.
    let first = sweep_watermark(&app)
        .await
        .expect("a finished sweep moves the watermark");
    assert!(first <= captured_at(&app, &paid.payment_id).await + 60);

    // A payment lost after the watermark is still found by the next, windowed, sweep.
    let later = pending_order(&app, "carol", "lost-3").await;
    let paid_later = app.captured(&later, 1000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.eventually(60, "the windowed sweep", || async {
        app.reconcile_now(&schedule, 1).await;
        (app.order(&later).await["status"] == "fulfilled").then_some(())
    })
    .await;
    assert_eq!(
        app.order(&later).await["payments"][0]["payment_id"],
        paid_later.payment_id.as_str()
    );
    let second = sweep_watermark(&app).await.unwrap();
    assert!(
        second >= first,
        "the watermark only moves forward ({first} -> {second})"
    );
    schedule.delete(Default::default()).await.unwrap();
    let report = audited(&app, "every webhook lost").await;
    assert_eq!((report.applied.count, report.refunded.count), (2, 1));
}

/// How far the provider sweep has looked (Unix seconds), if it ever finished.
async fn sweep_watermark(app: &TestApp) -> Option<i64> {
    sqlx::query_scalar("SELECT through FROM sweep_watermarks WHERE name = 'provider_payments'")
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

/// When the provider says it captured `payment_id` (Unix seconds).
async fn captured_at(app: &TestApp, payment_id: &str) -> i64 {
    app.sandbox
        .payments()
        .into_iter()
        .find(|p| p.payment_id == payment_id)
        .map(|p| p.created)
        .expect("the sandbox holds the payment")
}

#[tokio::test]
async fn the_provider_lists_payments_by_creation_time_a_page_at_a_time() {
    let app = spawn_app().await;
    let provider = orderflow_provider::PaymentProvider::new(&app.provider).unwrap();
    let ids: std::collections::BTreeSet<String> = (0..230)
        .map(|i| app.captured(&format!("ord_{i}"), 100).payment_id)
        .collect();
    let now = orderflow_store::now_ms() / 1000;
    // From the beginning: three pages of 100, 100 and 30, each payment once.
    let (mut seen, mut after, mut pages) = (std::collections::BTreeSet::new(), None, 0);
    loop {
        let page = provider
            .payments_created_since(0, after.as_deref())
            .await
            .unwrap();
        pages += 1;
        for p in &page.data {
            assert!(seen.insert(p.id.clone()), "{} listed twice", p.id);
        }
        after = page.next_cursor(|p| &p.id);
        if after.is_none() {
            break;
        }
    }
    assert_eq!((pages, &seen), (3, &ids));
    // Nothing was created after now + 1 s.
    let none = provider
        .payments_created_since(now + 1, None)
        .await
        .unwrap();
    assert!(none.data.is_empty() && !none.has_more, "{none:?}");
    // Captured for orders nobody placed, never reported: the two-way audit sees every one.
    let report = app.audit().await;
    let unreported: std::collections::BTreeSet<String> = report
        .discrepancies
        .iter()
        .filter(|d| d.problem == "no_webhook")
        .map(|d| d.payment_id.clone())
        .collect();
    assert_eq!(unreported, ids, "{}", report.render());
}

/// Makes the database itself refuse to sell any more of `sku`, as a constraint added by mistake
/// would (PostgreSQL: a CHECK; SQLite: a trigger that aborts with a constraint error), or
/// lifts it again.
async fn forbid_selling(app: &TestApp, sku: &str, forbid: bool) {
    let statements: Vec<String> = match (app.on_postgres(), forbid) {
        (true, true) => vec![format!(
            "ALTER TABLE skus ADD CONSTRAINT forbid_selling CHECK (sku <> '{sku}' OR sold = 0) NOT VALID"
        )],
        (true, false) => vec!["ALTER TABLE skus DROP CONSTRAINT forbid_selling".into()],
        (false, true) => vec![format!(
            "CREATE TRIGGER forbid_selling BEFORE UPDATE OF sold ON skus
             WHEN NEW.sku = '{sku}' AND NEW.sold > OLD.sold
             BEGIN SELECT RAISE(ABORT, 'selling {sku} is forbidden'); END"
        )],
        (false, false) => vec!["DROP TRIGGER forbid_selling".into()],
    };
    for sql in statements {
        sqlx::query(&sql).execute(&app.db).await.unwrap();
    }
}

#[tokio::test]
async fn a_constraint_violation_in_a_settle_step_stops_the_order_visibly_until_ops_retry_it() {
    let app = spawn_app().await;
    app.put_sku("book", 1000, 10).await;
    let order = pending_order(&app, "alice", "att-1").await;
    forbid_selling(&app, "book", true).await;
    let paid_at = std::time::Instant::now();
    let payment_id = app.checkout_and_pay(&order, None).await;

    // Within a minute: the audit, the order's events, the metric and the Web UI all show it.
    let stopped = app
        .eventually(60, "the order needs attention", || async {
            let report = app.audit().await;
            report
                .needs_attention
                .into_iter()
                .find(|a| a.order_id == order)
        })
        .await;
    println!(
        "needs_attention visible {:.1} s after the payment",
        paid_at.elapsed().as_secs_f64()
    );
    assert_eq!(stopped.code, "constraint_violation", "{stopped:?}");
    assert!(
        !app.audit().await.is_clean(),
        "an order waiting for ops is not clean"
    );
    assert!(
        steps(&app, &order)
            .await
            .contains(&"needs_attention:1 \"constraint_violation\"".to_owned()),
        "{:?}",
        steps(&app, &order).await
    );
    let metrics = app.scrape(&format!("{}/metrics", app.base)).await;
    assert!(
        metrics.contains("orderflow_orders_needs_attention{code=\"constraint_violation\"} 1"),
        "{metrics}"
    );
    let listed = app
        .eventually(
            30,
            "OrderStatus = 'needs_attention' in visibility",
            || async {
                let found = app.workflows_where("OrderStatus = 'needs_attention'");
                (!found.is_empty()).then_some(found)
            },
        )
        .await;
    assert_eq!(listed, vec![orderflow_workflows::workflow_id(&order)]);

    // Nothing is retried in silence: the step rolled back whole, and stays stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = app.audit().await;
    assert_eq!(again.needs_attention.len(), 1, "{}", again.render());
    assert_eq!(
        again.needs_attention[0].raised, 1,
        "raised once, not retried"
    );
    assert_eq!(app.order(&order).await["status"], "pending_payment");
    assert_eq!(
        app.sku("book").await["reserved"],
        1,
        "the hold is kept, not lost"
    );
    let r = app
        .as_admin()
        .post("/v1/admin/orders/ord_nobody/retry", json!({}))
        .await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"), "{}", r.body);

    // Ops lift the constraint and retry: the order is paid with the same payment.
    forbid_selling(&app, "book", false).await;
    let r = app
        .as_admin()
        .post(&format!("/v1/admin/orders/{order}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["code"], "constraint_violation");
    let done = app.wait_status(&order, "fulfilled").await;
    assert_eq!(
        done["payments"][0]["payment_id"],
        payment_id.as_str(),
        "{done}"
    );
    assert_eq!(done["payments"][0]["status"], "captured", "{done}");
    let r = app
        .as_admin()
        .post(&format!("/v1/admin/orders/{order}/retry"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "order_not_stopped"),
        "{}",
        r.body
    );
    assert!(
        steps(&app, &order)
            .await
            .contains(&"attention_resolved:1 \"retry\"".to_owned())
    );
    let report = audited(&app, "stopped on a constraint, retried by ops").await;
    assert_eq!(report.applied.count, 1);
    assert_eq!(provider_refunds(&app, &payment_id), 0);
    app.assert_invariants().await;
}
