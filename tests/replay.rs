//! Determinism guard: every recorded history under `tests/histories/` must replay against the
//! current workflow code, for every workflow type (order, refund, partial refund, payment
//! decision, redemption, reconcile). A change to a released workflow that is not behind `ctx.patched(..)` fails here,
//! before it can break orders that are running in production.
//!
//! `1.0-*.json` is the baseline: the redesigned workflows, before any release. Record a new set
//! by hand with `HISTORY_VERSION=<v> cargo test --test replay -- --ignored record_histories`
//! when a change is released, and keep the old files: running orders were started by the old
//! code (see the README's upgrade policy).

mod common;

use common::{TestApp, spawn_app};
use orderflow_workflows::{OrderWorkflow, RefundWorkflow, workflow_id};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use temporalio_client::{WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

#[tokio::test]
async fn every_recorded_history_replays_against_the_current_workflows() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(histories_dir())
        .expect("tests/histories exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no recorded histories");
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<OrderWorkflow>()
        .unwrap()
        .register_workflow::<RefundWorkflow>()
        .unwrap()
        .register_workflow::<orderflow_workflows::OrderRefundWorkflow>()
        .unwrap()
        .register_workflow::<orderflow_workflows::PaymentDecisionWorkflow>()
        .unwrap()
        .register_workflow::<orderflow_workflows::RedemptionWorkflow>()
        .unwrap()
        .register_workflow::<orderflow_workflows::ReconcileWorkflow>()
        .unwrap()
        .build();
    let replayer = WorkflowReplayer::new(options).expect("replayer");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let history = WorkflowHistory::from_json(&bytes).expect("a history JSON file");
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", file.display()));
    }
}

async fn save(app: &TestApp, workflow: String, name: &str) {
    let handle = app.client.get_workflow_handle::<OrderWorkflow>(workflow);
    let json = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("fetch history");
    let version = std::env::var("HISTORY_VERSION").unwrap_or_else(|_| "vN".into());
    let path = histories_dir().join(format!("{version}-{name}.json"));
    std::fs::write(&path, json).unwrap();
    eprintln!("recorded {}", path.display());
}

/// Records one history per path through the order workflow, and one of every other workflow.
#[tokio::test]
#[ignore = "records histories; run by hand when releasing a workflow change"]
async fn record_histories() {
    let app = spawn_app().await;
    app.put_sku("book", 1500, 10).await;
    app.credit_wallet("alice", 1000).await;
    app.credit_points("alice", 300).await;
    let mut coupons = Vec::new();
    for _ in 0..6 {
        coupons.push(app.create_coupon("alice", "amount", 500).await);
    }
    let full = |timeout: u64, coupon: &str| {
        json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "coupon_id": coupon,
               "points": 50, "wallet_amount": 50, "payment_timeout_secs": timeout})
    };

    // Paid, then a duplicate payment.
    let paid = app.create_order("paid", full(60, &coupons[0])).await.body;
    let id = paid["order_id"].as_str().unwrap().to_owned();
    app.deliver(&app.captured(&id, 900)).await;
    app.deliver(&app.captured(&id, 900)).await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "paid").await;

    // Cancelled at the deadline.
    let timeout = app.create_order("timeout", full(1, &coupons[1])).await.body;
    assert_eq!(timeout["status"], "pending_payment", "{timeout}");
    let id = timeout["order_id"].as_str().unwrap().to_owned();
    // A payment after the timeout, while the workflow is open (v2: refunded by a child).
    app.eventually(30, "the timeout", || async {
        (app.order(&id).await["status"] == "cancelled").then_some(())
    })
    .await;
    app.deliver(&app.captured(&id, 900)).await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "timeout").await;

    // Cancelled by the user.
    let cancel = app.create_order("cancel", full(60, &coupons[2])).await.body;
    let id = cancel["order_id"].as_str().unwrap().to_owned();
    app.cancel(&id, "user").await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "user-cancel").await;

    // v1.4: a checkout, then a cancel, which ends the session at the provider.
    let checkout_cancel = app
        .create_order(
            "checkout-cancel",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await
        .body;
    let id = checkout_cancel["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.checkout(&id).await.status, 200);
    app.cancel(&id, "user").await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "checkout-cancel").await;

    // v1.5: the provider ends the first session on its own (its `checkout.session.expired`
    // signals `order.session_ended`), the next checkout opens a second one, which is paid.
    let ended = app
        .create_order(
            "session-ended",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await
        .body;
    let id = ended["order_id"].as_str().unwrap().to_owned();
    let first = app.checkout(&id).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let first_id = first.body["payment_session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.end_session_at_provider(&first_id).await;
    let step = format!("checkout:{first_id}:expired");
    app.eventually(30, "the session's end recorded", || async {
        app.steps(&id).await.contains(&step).then_some(())
    })
    .await;
    let second = app.checkout(&id).await;
    assert_ne!(second.body["payment_session_id"], first_id.as_str());
    app.pay(second.body["pay_url"].as_str().unwrap(), None)
        .await;
    app.wait_status(&id, "fulfilled").await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "session-ended").await;

    // Checkout, paid through the sandbox, then a second payment: refunded by a child workflow.
    let checkout = app
        .create_order("checkout", full(60, &coupons[3]))
        .await
        .body;
    let id = checkout["order_id"].as_str().unwrap().to_owned();
    app.checkout_and_pay(&id, None).await;
    app.eventually(30, "paid", || async {
        (app.order(&id).await["status"] == "fulfilled").then_some(())
    })
    .await;
    let second = app.captured(&id, 900);
    app.deliver(&second).await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "checkout-paid-duplicate").await;
    save(
        &app,
        orderflow_workflows::refund_workflow_id(&second.payment_id),
        "refund",
    )
    .await;
    // v1.5: a partial refund of that order, by an admin: its own workflow.
    let partial = app
        .as_admin()
        .post_keyed(
            &format!("/v1/admin/orders/{id}/refunds"),
            "goodwill",
            json!({"amount": 300, "reason": "goodwill"}),
        )
        .await;
    assert_eq!(partial.status, 201, "{}", partial.body);
    let refund_id = partial.body["refund_id"].as_str().unwrap().to_owned();
    app.eventually(30, "the partial refund", || async {
        let refunds = orderflow_activities::order_refunds::refunds_of(&app.db, &id)
            .await
            .unwrap();
        (refunds[0].status == "succeeded").then_some(())
    })
    .await;
    save(
        &app,
        orderflow_workflows::order_refund_workflow_id(&refund_id),
        "order-refund",
    )
    .await;

    // v3: a physical order paid and shipped; another paid and cancelled before shipping.
    app.put_sku_with(
        "lamp",
        json!({"price": 1000, "stock": 10, "kind": "physical"}),
    )
    .await;
    let lamp = |key: &'static str| {
        app.create_order(
            key,
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "wallet_amount": 100}),
        )
    };
    for (key, cancel) in [("shipped", false), ("cancelled-after-pay", true)] {
        let id = lamp(key).await.body["order_id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.checkout_and_pay(&id, None).await;
        app.wait_shipment(&id, "pending").await;
        if cancel {
            app.cancel(&id, "user").await;
        } else {
            app.as_admin()
                .post(&format!("/v1/admin/orders/{id}/ship"), json!({}))
                .await;
        }
        app.settled(&id).await;
        save(&app, workflow_id(&id), key).await;
    }

    // Rejected: not enough stock.
    let rejected = app
        .create_order(
            "rejected",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 99}]}),
        )
        .await;
    let id = rejected.body["error"]["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.settled(&id).await;
    save(&app, workflow_id(&id), "rejected").await;

    // v4: a payment of the wrong amount, decided and refunded by its `payment-…` workflow.
    let pending = app
        .create_order("decided", full(60, &coupons[4]))
        .await
        .body["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = app.captured(&pending, 1);
    app.deliver(&short).await;
    app.refunded(&short.payment_id).await;
    app.cancel(&pending, "user").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    save(
        &app,
        orderflow_workflows::payment_workflow_id(&short.payment_id),
        "payment-decision",
    )
    .await;

    // Fulfilment failed for good (the quota lowered after the order was placed): undone.
    app.put_sku_with(
        "pro",
        json!({"price": 900, "stock": 10, "kind": "digital", "quota": 1}),
    )
    .await;
    let doomed = app
        .create_order(
            "doomed",
            json!({"user_id": "erin", "items": [{"sku": "pro", "quantity": 1}]}),
        )
        .await
        .body["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put_sku_with(
        "pro",
        json!({"price": 900, "stock": 9, "kind": "digital", "quota": 0}),
    )
    .await;
    app.checkout_and_pay(&doomed, None).await;
    app.wait_status(&doomed, "cancelled").await;
    app.settled(&doomed).await;
    save(&app, workflow_id(&doomed), "fulfilment-failed").await;

    // A redemption.
    app.put_sku_with(
        "ebook",
        json!({"price": 500, "stock": 10, "kind": "digital"}),
    )
    .await;
    let code = app
        .as_admin()
        .post(
            "/v1/admin/codes",
            json!({"code": "FREEBOOK", "sku": "ebook", "max_uses": 3}),
        )
        .await;
    assert_eq!(code.status, 201, "{}", code.body);
    let redeemed = app
        .as_user("bob")
        .post(
            "/v1/redemptions",
            json!({"user_id": "bob", "code": "FREEBOOK"}),
        )
        .await;
    assert_eq!(redeemed.status, 201, "{}", redeemed.body);
    save(
        &app,
        orderflow_workflows::redemption_workflow_id("bob", "FREEBOOK"),
        "redemption",
    )
    .await;

    // Admin orders: a lamp paid from the wallet and then cancelled (the wallet returns with the
    // cancel), and an ebook paid offline (fulfilled at once).
    app.credit_wallet("alice", 5000).await;
    for (key, sku, method) in [
        ("admin-wallet", "lamp", "wallet"),
        ("admin-offline", "ebook", "offline"),
    ] {
        let r = app
            .as_admin()
            .post_keyed("/v1/admin/orders", key, json!({"user_id": "alice", "items": [{"sku": sku, "quantity": 1}], "payment_method": method}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["order_id"].as_str().unwrap().to_owned();
        if method == "wallet" {
            app.wait_shipment(&id, "pending").await;
            app.cancel(&id, "admin").await;
        }
        app.settled(&id).await;
        save(&app, workflow_id(&id), key).await;
    }

    // A reconciliation run that resumes a terminated order.
    let orphan = app
        .create_order("orphan", full(600, &coupons[5]))
        .await
        .body["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.temporal_cli(&[
        "workflow",
        "terminate",
        "--workflow-id",
        &workflow_id(&orphan),
        "--reason",
        "recording a reconciliation",
    ]);
    let schedule = app.reconcile_schedule().await;
    app.reconcile_now(&schedule, 0).await;
    let run = app
        .eventually(30, "a finished reconciliation run", || async {
            let done =
                app.workflows_where("WorkflowType = 'reconcile' AND ExecutionStatus = 'Completed'");
            done.into_iter().next()
        })
        .await;
    schedule.delete(Default::default()).await.unwrap();
    save(&app, run, "reconcile").await;
    app.cancel(&orphan, "user").await;

    // v1.6: payments authorized at checkout (`ORDER_CAPTURE=at_shipment`), an authorization
    // of 16 s acted on 8 s before it lapses: captured at shipment; voided by a cancel; voided
    // and cancelled near its expiry; captured near its expiry, then shipped.
    use orderflow_workflows::model::AuthorizationExpiry;
    for on_expiry in [AuthorizationExpiry::Void, AuthorizationExpiry::Capture] {
        let tuning = common::Tuning::expiring(Duration::from_secs(16), 8, on_expiry);
        let app = common::spawn_app_tuned(tuning).await;
        app.put_sku_with(
            "lamp",
            json!({"price": 1000, "stock": 10, "kind": "physical"}),
        )
        .await;
        let paths: &[&str] = match on_expiry {
            AuthorizationExpiry::Void => &[
                "authorized-shipped",
                "authorized-cancelled",
                "authorization-voided",
            ],
            AuthorizationExpiry::Capture => &["authorization-captured"],
        };
        for key in paths {
            let r = app
                .create_order(
                    key,
                    json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}]}),
                )
                .await;
            let id = r.body["order_id"].as_str().unwrap().to_owned();
            app.checkout_and_pay(&id, None).await;
            app.wait_shipment(&id, "pending").await;
            match *key {
                "authorized-shipped" => {
                    let shipped = app
                        .as_admin()
                        .post(&format!("/v1/admin/orders/{id}/ship"), json!({}))
                        .await;
                    assert_eq!(shipped.status, 200, "{}", shipped.body);
                }
                "authorized-cancelled" => {
                    assert_eq!(app.cancel(&id, "user").await.status, 200);
                }
                "authorization-voided" => {
                    app.wait_status(&id, "cancelled").await;
                }
                _ => {
                    let step = "captured:".to_owned();
                    app.eventually(30, "the capture near expiry", || async {
                        app.steps(&id)
                            .await
                            .iter()
                            .any(|s| s.starts_with(&step))
                            .then_some(())
                    })
                    .await;
                    app.as_admin()
                        .post(&format!("/v1/admin/orders/{id}/ship"), json!({}))
                        .await;
                }
            }
            app.settled(&id).await;
            save(&app, workflow_id(&id), key).await;
        }
    }
}
