//! End to end, through the real router, a real Temporal dev server and a real database: an
//! order's whole life. Every test ends with the conservation invariants.

mod common;

use common::{OLD_SECRET, SECRET, TestApp, spawn_app};
use serde_json::{Value, json};
use std::time::Duration;

fn id(v: &Value) -> String {
    v["order_id"].as_str().expect("order_id").to_owned()
}

/// A catalogue and accounts for `alice`: book at 1500, 10 in stock; wallet 1000; 300 points.
async fn shop(app: &TestApp) {
    app.put_sku("book", 1500, 10).await;
    app.put_sku("pen", 200, 100).await;
    app.credit_wallet("alice", 1000).await;
    app.credit_points("alice", 300).await;
}

#[tokio::test]
async fn an_order_paid_before_its_deadline_is_paid_and_everything_is_captured() {
    let app = spawn_app().await;
    shop(&app).await;
    let coupon = app.create_coupon("alice", "amount", 500).await;
    let body = json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 2}], "coupon_id": coupon,
                      "points": 200, "wallet_amount": 300, "payment_timeout_secs": 60});
    let created = app.create_order("pay-1", body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let o = &created.body;
    assert_eq!(o["status"], "pending_payment");
    assert_eq!(
        (o["total_amount"].as_i64(), o["coupon_amount"].as_i64()),
        (Some(3000), Some(500))
    );
    assert_eq!(
        (
            o["points_amount"].as_i64(),
            o["wallet_amount"].as_i64(),
            o["payable_amount"].as_i64()
        ),
        (Some(200), Some(300), Some(2000))
    );
    assert!(o["expires_at"].is_string());
    assert_eq!(o["is_expired"], false);
    let order_id = id(o);

    let paid = app.deliver(&app.captured(&order_id, 2000)).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    app.settled(&order_id).await;

    let o = app.order(&order_id).await;
    assert_eq!(o["status"], "fulfilled");
    assert!(o["expires_at"].is_null(), "expires_at is cleared once paid");
    assert_eq!(o["payments"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.sku("book").await,
        json!({"sku": "book", "price": 1500, "available": 8, "reserved": 0, "sold": 2, "kind": "digital", "quota": null})
    );
    let c = app
        .as_admin()
        .get(&format!("/v1/coupons/{coupon}"))
        .await
        .body;
    assert_eq!(
        (
            c["balance"].as_i64(),
            c["used"].as_i64(),
            c["status"].as_str()
        ),
        (Some(0), Some(500), Some("used"))
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        json!({"user_id": "alice", "balance": 700, "frozen": 0, "spent": 300})
    );
    assert_eq!(
        app.as_user("alice").get("/v1/points/alice").await.body["points"],
        100
    );
    let events = app.events(&order_id).await;
    let to: Vec<&str> = events.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(to, ["pending_payment", "paid", "fulfilled"]);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline_and_everything_is_restored() {
    let app = spawn_app().await;
    shop(&app).await;
    // A partly used amount coupon: its balance must come back whatever its state.
    let coupon = app.create_coupon("alice", "amount", 2000).await;
    let first = app.create_order("part", json!({"user_id": "alice", "items": [{"sku": "pen", "quantity": 1}], "coupon_id": coupon, "payment_timeout_secs": 60})).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The pen costs 200, so nothing is payable: paid at creation with 200 of the coupon used
    // (and fulfilled right after: the pen is a digital good here).
    assert!(
        ["paid", "fulfilled"].contains(&first.body["status"].as_str().unwrap()),
        "{}",
        first.body
    );
    app.settled(&id(&first.body)).await;

    let body = json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 3}], "coupon_id": coupon,
                      "points": 300, "wallet_amount": 1000, "payment_timeout_secs": 2});
    let created = app.create_order("timeout-1", body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let order_id = id(&created.body);
    assert_eq!(app.sku("book").await["reserved"], 3);
    app.settled(&order_id).await;

    let o = app.order(&order_id).await;
    assert_eq!(
        (o["status"].as_str(), o["cancel_reason"].as_str()),
        (Some("cancelled"), Some("timeout"))
    );
    assert_eq!(
        app.sku("book").await,
        json!({"sku": "book", "price": 1500, "available": 10, "reserved": 0, "sold": 0, "kind": "digital", "quota": null})
    );
    let c = app
        .as_admin()
        .get(&format!("/v1/coupons/{coupon}"))
        .await
        .body;
    assert_eq!(
        (
            c["balance"].as_i64(),
            c["reserved"].as_i64(),
            c["used"].as_i64()
        ),
        (Some(1800), Some(0), Some(200))
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        json!({"user_id": "alice", "balance": 1000, "frozen": 0, "spent": 0})
    );
    assert_eq!(
        app.as_user("alice").get("/v1/points/alice").await.body["points"],
        300
    );
    let expired = app.as_admin().get("/v1/orders?status=cancelled").await.body;
    assert_eq!(expired["orders"].as_array().unwrap().len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_user_cancel_answers_with_the_cancelled_order_and_releases_everything() {
    let app = spawn_app().await;
    shop(&app).await;
    let coupon = app.create_coupon("alice", "discount", 700).await;
    let body = json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "coupon_id": coupon, "wallet_amount": 100});
    let created = app.create_order("cancel-1", body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let order_id = id(&created.body);
    assert_eq!(
        app.as_admin()
            .get(&format!("/v1/coupons/{coupon}"))
            .await
            .body["status"],
        "reserved"
    );

    let bad = app.cancel(&order_id, "bored").await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_cancel_reason"));
    let cancelled = app.cancel(&order_id, "user").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        (
            cancelled.body["status"].as_str(),
            cancelled.body["cancel_reason"].as_str()
        ),
        (Some("cancelled"), Some("user"))
    );
    // Answered after the releases: the coupon and the wallet are already back.
    assert_eq!(
        app.as_admin()
            .get(&format!("/v1/coupons/{coupon}"))
            .await
            .body["status"],
        "available"
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["frozen"],
        0
    );
    app.settled(&order_id).await;
    // Cancelling again is idempotent; a paid order cannot be cancelled.
    assert_eq!(app.cancel(&order_id, "user").await.status, 200);
    assert_eq!(app.sku("book").await["available"], 10);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_fulfilled_order_whose_workflow_has_ended_cannot_be_cancelled() {
    let app = spawn_app().await;
    shop(&app).await;
    let created = app
        .create_order(
            "paid-cancel",
            json!({"user_id": "alice", "items": [{"sku": "pen", "quantity": 1}]}),
        )
        .await;
    let order_id = id(&created.body);
    assert_eq!(app.deliver(&app.captured(&order_id, 200)).await.status, 200);
    app.settled(&order_id).await;
    let r = app.cancel(&order_id, "admin").await;
    assert_eq!((r.status, r.code()), (409, "order_not_cancellable"));
    assert_eq!(app.order(&order_id).await["status"], "fulfilled");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_rejected_creation_answers_422_with_its_code_and_holds_nothing() {
    let app = spawn_app().await;
    shop(&app).await;
    let coupon = app.create_coupon("alice", "amount", 100).await;
    let bobs = app.create_coupon("bob", "amount", 100).await;
    let cases = [
        (
            "r1",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 11}]}),
            "insufficient_stock",
        ),
        (
            "r2",
            json!({"user_id": "alice", "items": [{"sku": "nope", "quantity": 1}]}),
            "unknown_sku",
        ),
        (
            "r3",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "coupon_id": bobs}),
            "coupon_unusable",
        ),
        (
            "r4",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "coupon_id": coupon, "points": 301}),
            "insufficient_points",
        ),
        (
            "r5",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "coupon_id": coupon, "points": 100, "wallet_amount": 1001}),
            "insufficient_wallet_balance",
        ),
        (
            "r6",
            json!({"user_id": "alice", "items": [{"sku": "pen", "quantity": 1}], "points": 150, "wallet_amount": 100}),
            "amount_exceeds_total",
        ),
    ];
    for (key, body, code) in cases {
        let r = app.create_order(key, body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{key}: {}", r.body);
        let order_id = r.body["error"]["order_id"].as_str().unwrap().to_owned();
        app.settled(&order_id).await;
        assert_eq!(app.order(&order_id).await["status"], "rejected");
        // The same request again gets the same answer, from the stored order.
        let again = app.create_order(key, body).await;
        assert_eq!((again.status, again.code()), (422, code));
    }
    assert_eq!(app.sku("book").await["reserved"], 0);
    assert_eq!(
        app.as_admin()
            .get(&format!("/v1/coupons/{coupon}"))
            .await
            .body["balance"],
        100
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        json!({"user_id": "alice", "balance": 1000, "frozen": 0, "spent": 0})
    );
    assert_eq!(
        app.as_user("alice").get("/v1/points/alice").await.body["points"],
        300
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_key_make_one_order() {
    let app = spawn_app().await;
    shop(&app).await;
    let body =
        json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "wallet_amount": 10});
    let replies =
        futures::future::join_all((0..20).map(|_| app.create_order("same-key", body.clone())))
            .await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.body);
            id(&r.body)
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.sku("book").await["reserved"], 1);
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["frozen"],
        10
    );
    assert_eq!(
        app.as_admin().get("/v1/orders?user_id=alice").await.body["orders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let other = app
        .create_order(
            "same-key",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 2}]}),
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_key_reused")
    );
    let missing = app
        .as_user("alice")
        .send(app.http.post(format!("{}/v1/orders", app.base)).json(&body))
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (400, "idempotency_key_required")
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn ten_concurrent_duplicate_webhooks_make_one_payment() {
    let app = spawn_app().await;
    shop(&app).await;
    let created = app
        .create_order(
            "dup-hooks",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await;
    let order_id = id(&created.body);
    let event = serde_json::to_vec(&app.captured(&order_id, 1500)).unwrap();
    let replies = futures::future::join_all((0..10).map(|_| app.webhook(event.clone()))).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "every duplicate is a 200"
    );
    app.settled(&order_id).await;
    // After settlement, more duplicates change nothing either.
    assert_eq!(app.webhook(event).await.body["status"], "duplicate");
    let o = app.order(&order_id).await;
    assert_eq!(o["status"], "fulfilled");
    assert_eq!(o["payments"].as_array().unwrap().len(), 1);
    assert_eq!(app.sku("book").await["sold"], 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn webhooks_with_bad_signatures_are_refused_and_wrong_amounts_never_pay() {
    let app = spawn_app().await;
    shop(&app).await;
    let created = app
        .create_order(
            "sig",
            json!({"user_id": "alice", "items": [{"sku": "pen", "quantity": 2}]}),
        )
        .await;
    let order_id = id(&created.body);
    let now = orderflow_store::now_ms() / 1000;
    let event = app.captured(&order_id, 400);
    let body = serde_json::to_vec(&event).unwrap();
    let sign = |secret: &str, t: i64, b: &[u8]| Some(orderflow_api::signature::sign(secret, t, b));

    let mut tampered = event.clone();
    tampered.amount = 1;
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let short = app.captured(&order_id, 399);
    let cases = [
        (
            app.webhook_with(tampered, sign(SECRET, now, &body)).await,
            401,
            "signature_invalid",
        ),
        (
            app.webhook_with(body.clone(), sign("whsec_wrong", now, &body))
                .await,
            401,
            "signature_invalid",
        ),
        (
            app.webhook_with(body.clone(), None).await,
            401,
            "signature_missing",
        ),
        (
            app.webhook_with(body.clone(), sign(SECRET, now - 301, &body))
                .await,
            401,
            "signature_expired",
        ),
        (
            app.webhook_with(body.clone(), Some(format!("t={now},v0=abcd")))
                .await,
            401,
            "signature_malformed",
        ),
        (
            app.webhook_with(
                body.clone(),
                Some(format!("t={now},v1={}", "ab".repeat(32))),
            )
            .await,
            401,
            "signature_invalid",
        ),
    ];
    for (reply, status, code) in cases {
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{}",
            reply.body
        );
    }
    let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(inbox, 0, "a refused webhook is not even recorded");
    // Signed, but 399 for an order of 400: recorded, never pays. An unknown order: recorded.
    let mismatch = app.deliver(&short).await;
    assert_eq!(
        (mismatch.status, mismatch.body["status"].as_str()),
        (200, Some("amount_mismatch"))
    );
    let unknown = app.deliver(&app.captured("ord_unknown", 400)).await;
    assert_eq!(
        (unknown.status, unknown.body["status"].as_str()),
        (200, Some("unknown_order"))
    );
    // Neither pays the order: the short one goes to its decision and is refunded at once, the
    // unknown order's after its hold.
    let o = app.order(&order_id).await;
    assert_eq!(o["status"], "pending_payment");
    assert!(
        o["payments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] != "captured"),
        "{o}"
    );

    // The previous secret still works during a rotation.
    let rotated = app
        .webhook_with(body.clone(), sign(OLD_SECRET, now, &body))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    app.settled(&order_id).await;
    let o = app.order(&order_id).await;
    assert_eq!(o["status"], "fulfilled");
    // The short payment is owed back, and refunded once.
    let refunds = o["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{o}");
    assert_eq!(
        (
            refunds[0]["payment_id"].as_str(),
            refunds[0]["reason"].as_str(),
            refunds[0]["status"].as_str()
        ),
        (
            Some(short.payment_id.as_str()),
            Some("amount_mismatch"),
            Some("succeeded")
        )
    );
    app.assert_invariants().await;
}

/// Webhooks land within ±200 ms of each order's deadline. Whichever the engine saw first wins,
/// and each order ends wholly paid or wholly cancelled; a payment that lost is refunded once.
/// Prints when each webhook was sent and answered relative to `expires_at`, and the outcome.
/// (The deadline is 5 s so that creating 24 orders does not eat into the first sends.)
#[tokio::test]
async fn a_payment_racing_the_deadline_ends_either_paid_or_cancelled_never_both() {
    let app = spawn_app().await;
    app.put_sku("ticket", 100, 1000).await;
    const N: usize = 24;
    let mut orders = Vec::new();
    for i in 0..N {
        let r = app.create_order(&format!("race-{i}"), json!({"user_id": format!("u{i}"), "items": [{"sku": "ticket", "quantity": 1}], "payment_timeout_secs": 5})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let expires = time::OffsetDateTime::parse(
            r.body["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        orders.push((
            id(&r.body),
            (expires.unix_timestamp_nanos() / 1_000_000) as i64,
        ));
    }
    let sends = orders
        .iter()
        .enumerate()
        .map(|(i, (order_id, expires_ms))| {
            let offset = -200 + (400 * i as i64) / (N as i64 - 1);
            let app = &app;
            async move {
                let at = expires_ms + offset;
                let wait = at - orderflow_store::now_ms();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                let sent = orderflow_store::now_ms();
                let r = app.deliver(&app.captured(order_id, 100)).await;
                assert_eq!(r.status, 200, "{}", r.body);
                // (order, planned offset, actual send offset, answered offset) to expires_at
                let answered = orderflow_store::now_ms();
                (
                    order_id.clone(),
                    offset,
                    sent - expires_ms,
                    answered - expires_ms,
                )
            }
        });
    let timings = futures::future::join_all(sends).await;
    let (mut paid, mut cancelled) = (0, 0);
    for (order_id, _) in &orders {
        app.settled(order_id).await;
        let o = app.order(order_id).await;
        let payments = o["payments"].as_array().unwrap();
        assert_eq!(payments.len(), 1, "the payment is recorded either way: {o}");
        match o["status"].as_str().unwrap() {
            "fulfilled" => {
                paid += 1;
                assert_eq!(payments[0]["status"], "captured");
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(
                    payments[0]["status"], "unapplied",
                    "a payment after the cancel is owed back"
                );
                assert_eq!(o["refunds"][0]["status"], "succeeded", "{o}");
            }
            other => panic!("order {order_id} ended {other}"),
        }
    }
    println!("deadline race over {N} orders: {paid} paid, {cancelled} cancelled");
    println!("planned / sent / answered, ms from expires_at -> outcome");
    for (order_id, planned, sent, answered) in &timings {
        let status = app.order(order_id).await["status"].clone();
        println!("{planned:>5} {sent:>5} {answered:>5} -> {status}");
    }
    let t = app.sku("ticket").await;
    assert_eq!(t["sold"].as_i64().unwrap() as usize, paid);
    assert_eq!(t["available"].as_i64().unwrap() as usize, 1000 - paid);
    app.assert_invariants().await;
}
