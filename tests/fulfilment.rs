//! After payment, end to end (issue 4): fulfilment of digital and physical goods, cancel after
//! payment and its race with shipping, admin one-step orders, redemption codes, quotas and the
//! first-purchase flag. Real Temporal dev server, real database, real provider sandbox. Every
//! test ends with `assert_invariants()` (conservation, quotas, codes, fulfilment vs status, and
//! every refund against the provider).

mod common;

use common::{TestApp, spawn_app};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["order_id"].as_str().expect("order_id").to_owned()
}

/// Alice's accounts and a coupon; a physical `lamp` (1000) and a digital `course` (800).
async fn shop(app: &TestApp) -> String {
    app.put_sku_with(
        "lamp",
        json!({"price": 1000, "stock": 50, "kind": "physical"}),
    )
    .await;
    app.put_sku_with(
        "course",
        json!({"price": 800, "stock": 50, "kind": "digital"}),
    )
    .await;
    app.credit_wallet("alice", 1000).await;
    app.credit_points("alice", 300).await;
    app.create_coupon("alice", "amount", 500).await
}

async fn ship(app: &TestApp, order_id: &str) -> common::Reply {
    app.as_admin()
        .post(&format!("/v1/admin/orders/{order_id}/ship"), json!({}))
        .await
}

/// The order has exactly one refund: of `payment`, succeeded, for `reason`.
fn assert_one_refund(o: &Value, payment: &str, reason: &str) {
    let refunds = o["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{o}");
    assert_eq!(
        (
            refunds[0]["payment_id"].as_str(),
            refunds[0]["status"].as_str(),
            refunds[0]["reason"].as_str()
        ),
        (Some(payment), Some("succeeded"), Some(reason))
    );
}

async fn entitlements(app: &TestApp, user: &str) -> Vec<Value> {
    app.as_user(user)
        .get(&format!("/v1/entitlements/{user}"))
        .await
        .body["entitlements"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn digital_goods_are_fulfilled_at_payment_and_physical_goods_when_shipped() {
    let app = spawn_app().await;
    shop(&app).await;
    let course = id(&app
        .create_order(
            "digital",
            json!({"user_id": "alice", "items": [{"sku": "course", "quantity": 1}]}),
        )
        .await
        .body);
    app.checkout_and_pay(&course, None).await;
    let o = app.wait_status(&course, "fulfilled").await;
    assert!(o["shipment_status"].is_null());
    let granted = entitlements(&app, "alice").await;
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(granted[0]["sku"], "course");

    let lamp = id(&app
        .create_order(
            "physical",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 2}]}),
        )
        .await
        .body);
    app.checkout_and_pay(&lamp, None).await;
    app.wait_shipment(&lamp, "pending").await;
    assert_eq!(app.order(&lamp).await["status"], "paid");
    let shipped = ship(&app, &lamp).await;
    assert_eq!(shipped.status, 200, "{}", shipped.body);
    assert_eq!(
        (
            shipped.body["status"].as_str(),
            shipped.body["shipment_status"].as_str()
        ),
        (Some("fulfilled"), Some("shipped"))
    );
    // Shipping twice: refused, nothing changes.
    let again = ship(&app, &lamp).await;
    assert_eq!((again.status, again.code()), (409, "order_not_shippable"));
    // A digital order has nothing to ship.
    let r = ship(&app, &course).await;
    assert_eq!((r.status, r.code()), (409, "order_not_shippable"));
    app.settled(&course).await;
    app.settled(&lamp).await;
    assert_eq!(app.sku("lamp").await["sold"], 2);
    app.assert_invariants().await;
}

/// A paid physical order with coupon, points and wallet, cancelled before it ships: shipment
/// intercepted, payment refunded once, stock, coupon, points and wallet all back. A paid digital
/// order cancelled: its entitlement revoked.
#[tokio::test]
async fn cancel_after_payment_intercepts_refunds_returns_and_revokes() {
    let app = spawn_app().await;
    let coupon = shop(&app).await;
    let body = json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 2}], "coupon_id": coupon,
                      "points": 200, "wallet_amount": 300});
    let order_id = id(&app.create_order("cap", body).await.body);
    let payment = app.checkout_and_pay(&order_id, None).await;
    app.wait_shipment(&order_id, "pending").await;
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["spent"],
        300
    );

    let r = app.cancel(&order_id, "user").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let o = &r.body;
    assert_eq!(
        (
            o["status"].as_str(),
            o["cancel_reason"].as_str(),
            o["shipment_status"].as_str()
        ),
        (Some("cancelled"), Some("user"), Some("intercepted"))
    );
    // Answered after the whole sequence: refunded and everything returned.
    assert_one_refund(o, &payment, "order_cancelled");
    assert_eq!(
        app.sku("lamp").await["available"],
        50,
        "stock back on the shelf"
    );
    assert_eq!(app.sku("lamp").await["sold"], 0);
    let c = app
        .as_admin()
        .get(&format!("/v1/coupons/{coupon}"))
        .await
        .body;
    assert_eq!(
        (c["balance"].as_i64(), c["used"].as_i64()),
        (Some(500), Some(0))
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        json!({"user_id": "alice", "balance": 1000, "frozen": 0, "spent": 0})
    );
    assert_eq!(
        app.as_user("alice").get("/v1/points/alice").await.body["points"],
        300
    );
    let steps = app.steps(&order_id).await;
    for step in [
        "status:paid",
        "shipment:pending",
        "fulfilment:stopped",
        "status:cancelled",
    ] {
        assert!(
            steps.contains(&step.to_owned()),
            "{step} missing: {steps:?}"
        );
    }

    // Digital: fulfilled at once; a cancel (while the workflow is open) revokes the grant.
    let course = id(&app
        .create_order(
            "cap-digital",
            json!({"user_id": "alice", "items": [{"sku": "course", "quantity": 1}]}),
        )
        .await
        .body);
    app.checkout_and_pay(&course, None).await;
    app.wait_status(&course, "fulfilled").await;
    assert_eq!(entitlements(&app, "alice").await.len(), 1);
    let r = app.cancel(&course, "user").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    assert!(entitlements(&app, "alice").await.is_empty(), "revoked");
    app.settled(&order_id).await;
    app.settled(&course).await;
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancel_after_ship_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    shop(&app).await;
    let order_id = id(&app
        .create_order(
            "shipped",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "wallet_amount": 100}),
        )
        .await
        .body);
    app.checkout_and_pay(&order_id, None).await;
    app.wait_shipment(&order_id, "pending").await;
    assert_eq!(ship(&app, &order_id).await.status, 200);
    let before = (
        app.order(&order_id).await,
        app.sku("lamp").await,
        app.as_user("alice").get("/v1/wallets/alice").await.body,
    );
    let r = app.cancel(&order_id, "user").await;
    assert_eq!(
        (r.status, r.code()),
        (409, "order_already_shipped"),
        "{}",
        r.body
    );
    let after = (
        app.order(&order_id).await,
        app.sku("lamp").await,
        app.as_user("alice").get("/v1/wallets/alice").await.body,
    );
    assert_eq!(before, after, "nothing changed");
    app.settled(&order_id).await;
    app.assert_invariants().await;
}

/// Ship and cancel sent at the same moment, 20 times: each order ends wholly one way.
#[tokio::test]
async fn cancel_racing_ship_resolves_to_exactly_one_of_them() {
    let app = spawn_app().await;
    shop(&app).await;
    app.credit_wallet("alice", 100_000).await;
    let mut orders = Vec::new();
    for i in 0..20 {
        let order_id = id(&app
            .create_order(
                &format!("race-{i}"),
                json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "wallet_amount": 100}),
            )
            .await
            .body);
        app.checkout_and_pay(&order_id, None).await;
        orders.push(order_id);
    }
    for order_id in &orders {
        app.wait_shipment(order_id, "pending").await;
    }
    let races = orders.iter().map(|order_id| {
        let app = &app;
        async move {
            let (shipped, cancelled) =
                tokio::join!(ship(app, order_id), app.cancel(order_id, "user"));
            (order_id.clone(), shipped, cancelled)
        }
    });
    let (mut ships, mut cancels) = (0, 0);
    for (order_id, shipped, cancelled) in futures::future::join_all(races).await {
        let o = app.order(&order_id).await;
        match (shipped.status, cancelled.status) {
            (200, 409) => {
                ships += 1;
                assert_eq!(cancelled.code(), "order_already_shipped");
                assert_eq!(
                    (o["status"].as_str(), o["shipment_status"].as_str()),
                    (Some("fulfilled"), Some("shipped"))
                );
                assert!(o["refunds"].as_array().unwrap().is_empty());
            }
            (409, 200) => {
                cancels += 1;
                assert_eq!(shipped.code(), "order_not_shippable");
                assert_eq!(
                    (o["status"].as_str(), o["shipment_status"].as_str()),
                    (Some("cancelled"), Some("intercepted"))
                );
                assert_eq!(o["refunds"][0]["status"], "succeeded", "{o}");
            }
            other => panic!(
                "order {order_id}: ship {} / cancel {}: {} {}",
                other.0, other.1, shipped.body, cancelled.body
            ),
        }
    }
    println!("cancel racing ship over 20 orders: {ships} shipped, {cancels} cancelled");
    let lamp = app.sku("lamp").await;
    assert_eq!(lamp["sold"].as_i64().unwrap(), ships);
    for order_id in &orders {
        app.settled(order_id).await;
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_admin_wallet_order_has_no_deadline_and_a_cancel_returns_the_wallet_funds() {
    let app = spawn_app().await;
    shop(&app).await;
    let r = app
        .as_admin()
        .post_keyed("/v1/admin/orders", "admin-1", json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "points": 100, "payment_method": "wallet"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let order_id = id(&r.body);
    let o = app.order(&order_id).await;
    assert!(o["expires_at"].is_null(), "no deadline: {o}");
    assert_eq!(
        (
            o["payment_method"].as_str(),
            o["wallet_amount"].as_i64(),
            o["payable_amount"].as_i64()
        ),
        (Some("wallet"), Some(900), Some(0))
    );
    assert!(["paid", "fulfilled"].contains(&o["status"].as_str().unwrap()));
    app.eventually(30, "the wallet charged", || async {
        (app.as_user("alice").get("/v1/wallets/alice").await.body["spent"] == 900).then_some(())
    })
    .await;
    let cancelled = app.cancel(&order_id, "admin").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        json!({"user_id": "alice", "balance": 1000, "frozen": 0, "spent": 0})
    );
    assert_eq!(
        app.as_user("alice").get("/v1/points/alice").await.body["points"],
        300
    );
    assert!(
        cancelled.body["refunds"].as_array().unwrap().is_empty(),
        "no online payment to refund"
    );

    // Online is not an admin method; a deadline is not an admin field.
    let bad = app
        .as_admin()
        .post_keyed("/v1/admin/orders", "admin-2", json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "payment_method": "online"}))
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_payment_method"));
    app.settled(&order_id).await;
    app.assert_invariants().await;
}

#[tokio::test]
async fn fifty_users_racing_for_a_code_with_ten_uses_get_exactly_ten_grants() {
    let app = spawn_app().await;
    shop(&app).await;
    let r = app
        .as_admin()
        .post(
            "/v1/admin/codes",
            json!({"code": "LAUNCH10", "sku": "course", "max_uses": 10}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let replies = futures::future::join_all((0..50).map(|i| {
        app.as_user(&format!("user{i}")).post(
            "/v1/redemptions",
            json!({"user_id": format!("user{i}"), "code": "LAUNCH10"}),
        )
    }))
    .await;
    let granted = replies.iter().filter(|r| r.status == 201).count();
    let exhausted = replies
        .iter()
        .filter(|r| (r.status, r.code()) == (409, "code_exhausted"))
        .count();
    assert_eq!(
        (granted, exhausted),
        (10, 40),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let unknown = app
        .as_user("u")
        .post("/v1/redemptions", json!({"user_id": "u", "code": "NOPE"}))
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, "code_not_found"));
    app.assert_invariants().await;
}

#[tokio::test]
async fn one_user_redeeming_a_code_ten_times_at_once_is_granted_once() {
    let app = spawn_app().await;
    shop(&app).await;
    app.as_admin()
        .post(
            "/v1/admin/codes",
            json!({"code": "ONCE", "sku": "course", "max_uses": 5}),
        )
        .await;
    let body = json!({"user_id": "bob", "code": "ONCE"});
    let replies = futures::future::join_all(
        (0..10).map(|_| app.as_user("bob").post("/v1/redemptions", body.clone())),
    )
    .await;
    assert!(
        replies.iter().all(|r| r.status == 201),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let ids: std::collections::BTreeSet<&str> = replies
        .iter()
        .map(|r| r.body["entitlement_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "the same grant every time");
    assert_eq!(entitlements(&app, "bob").await.len(), 1);
    // Later, again: the same grant, not a second one.
    let again = app
        .as_user("bob")
        .post("/v1/redemptions", json!({"user_id": "bob", "code": "ONCE"}))
        .await;
    assert_eq!(again.body["entitlement_id"], *ids.iter().next().unwrap());
    assert_eq!(entitlements(&app, "bob").await.len(), 1);
    app.assert_invariants().await;
}

/// One active subscription per user: 20 concurrent orders, one gets it.
#[tokio::test]
async fn a_quota_of_one_holds_under_twenty_concurrent_orders() {
    let app = spawn_app().await;
    app.put_sku_with(
        "pro",
        json!({"price": 900, "stock": 100, "kind": "digital", "quota": 1}),
    )
    .await;
    let keys: Vec<String> = (0..20).map(|i| format!("sub-{i}")).collect();
    let replies = futures::future::join_all(keys.iter().map(|key| {
        app.create_order(
            key,
            json!({"user_id": "carol", "items": [{"sku": "pro", "quantity": 1}]}),
        )
    }))
    .await;
    let placed: Vec<&common::Reply> = replies.iter().filter(|r| r.status == 201).collect();
    let refused = replies
        .iter()
        .filter(|r| (r.status, r.code()) == (422, "quota_exceeded"))
        .count();
    assert_eq!((placed.len(), refused), (1, 19));
    // After it is paid, the entitlement keeps the slot taken.
    let order_id = id(&placed[0].body);
    app.checkout_and_pay(&order_id, None).await;
    app.wait_status(&order_id, "fulfilled").await;
    let more = app
        .create_order(
            "sub-more",
            json!({"user_id": "carol", "items": [{"sku": "pro", "quantity": 1}]}),
        )
        .await;
    assert_eq!((more.status, more.code()), (422, "quota_exceeded"));
    // Another user is not affected.
    let dave = app
        .create_order(
            "sub-dave",
            json!({"user_id": "dave", "items": [{"sku": "pro", "quantity": 1}]}),
        )
        .await;
    assert_eq!(dave.status, 201, "{}", dave.body);
    app.cancel(&id(&dave.body), "user").await;
    app.settled(&order_id).await;
    app.assert_invariants().await;
}

/// The quota was lowered after the order was placed: fulfilment refuses it for good, and the
/// order is compensated and refunded once.
#[tokio::test]
async fn a_permanent_fulfilment_failure_is_compensated_and_refunded_once() {
    let app = spawn_app().await;
    app.put_sku_with(
        "pro",
        json!({"price": 900, "stock": 10, "kind": "digital", "quota": 1}),
    )
    .await;
    let order_id = id(&app
        .create_order(
            "doomed",
            json!({"user_id": "erin", "items": [{"sku": "pro", "quantity": 1}]}),
        )
        .await
        .body);
    app.put_sku_with(
        "pro",
        json!({"price": 900, "stock": 9, "kind": "digital", "quota": 0}),
    )
    .await;
    let payment = app.checkout_and_pay(&order_id, None).await;
    let o = app.wait_status(&order_id, "cancelled").await;
    assert_eq!(o["cancel_reason"], "fulfilment_failed");
    app.settled(&order_id).await;
    let o = app.order(&order_id).await;
    assert_one_refund(&o, &payment, "fulfilment_failed");
    assert!(entitlements(&app, "erin").await.is_empty());
    let pro = app.sku("pro").await;
    assert_eq!(
        (pro["available"].as_i64(), pro["sold"].as_i64()),
        (Some(10), Some(0))
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn exactly_one_of_a_users_concurrent_orders_is_their_first_purchase() {
    let app = spawn_app().await;
    shop(&app).await;
    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(id(&app
            .create_order(
                &format!("first-{i}"),
                json!({"user_id": "frank", "items": [{"sku": "course", "quantity": 1}]}),
            )
            .await
            .body));
    }
    futures::future::join_all(orders.iter().map(|o| app.checkout_and_pay(o, None))).await;
    let mut firsts = 0;
    for order_id in &orders {
        let o = app.wait_status(order_id, "fulfilled").await;
        if o["is_first_purchase"] == true {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    for order_id in &orders {
        app.settled(order_id).await;
    }
    app.assert_invariants().await;
}

/// A payment the payer's bank disputes (issue 14, point 6), reported by a signed
/// `charge.disputed` webhook: a digital order loses its entitlements, a physical one is flagged
/// for ops; neither changes status or moves money. Redeliveries change nothing. A dispute whose
/// webhook never arrived is a discrepancy of the two-way audit until reconciliation's sweep
/// records it.
#[tokio::test]
async fn a_dispute_revokes_digital_goods_flags_physical_ones_and_the_audit_shows_both() {
    let app = spawn_app().await;
    shop(&app).await;
    let order = |key: &'static str, sku: &'static str| {
        let app = &app;
        async move {
            id(&app
                .create_order(
                    key,
                    json!({"user_id": "alice", "items": [{"sku": sku, "quantity": 1}]}),
                )
                .await
                .body)
        }
    };
    let course = order("dispute-course", "course").await;
    let course_payment = app.checkout_and_pay(&course, None).await;
    app.wait_status(&course, "fulfilled").await;
    let lamp = order("dispute-lamp", "lamp").await;
    let lamp_payment = app.checkout_and_pay(&lamp, None).await;
    app.wait_shipment(&lamp, "pending").await;
    assert_eq!(entitlements(&app, "alice").await.len(), 1);

    let disputed = |order_id: String, payment_id: String| {
        let app = &app;
        async move {
            let step = format!("disputed:{payment_id}");
            app.eventually(30, &step, || async {
                app.steps(&order_id).await.contains(&step).then_some(())
            })
            .await
        }
    };
    // The whole course payment, disputed over the sandbox's own route (its webhook is signed
    // and delivered like a payment's).
    let r = app
        .http
        .post(format!(
            "{}/_sandbox/payments/{course_payment}/dispute",
            app.provider.base_url
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    disputed(course.clone(), course_payment.clone()).await;
    assert_eq!(entitlements(&app, "alice").await, Vec::<Value>::new());

    // Part of the lamp's payment. Its event, delivered again and then under a new event id:
    // one dispute, nothing done twice.
    let event = app
        .sandbox
        .dispute(&lamp_payment, Some(400), true)
        .expect("the sandbox disputes a payment it captured");
    disputed(lamp.clone(), lamp_payment.clone()).await;
    let again = app.deliver(&event).await;
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("duplicate")),
        "{}",
        again.body
    );
    let mut renamed = event.clone();
    renamed.event_id = format!("{}_again", event.event_id);
    let r = app.deliver(&renamed).await;
    assert_eq!(r.body["status"], "dispute_recorded", "{}", r.body);
    let lamp_steps = app.steps(&lamp).await;
    assert_eq!(
        lamp_steps
            .iter()
            .filter(|s| s.starts_with("disputed:"))
            .count(),
        1,
        "{lamp_steps:?}"
    );
    // Neither order changed status, and the lamp's shipment still waits.
    assert_eq!(app.order(&course).await["status"], "fulfilled");
    let o = app.order(&lamp).await;
    assert_eq!(
        (o["status"].as_str(), o["shipment_status"].as_str()),
        (Some("paid"), Some("pending")),
        "{o}"
    );

    // A dispute whose every webhook was lost: the audit finds it, and it clears once the
    // event is delivered.
    let other = order("dispute-lost", "course").await;
    let other_payment = app.checkout_and_pay(&other, None).await;
    app.wait_status(&other, "fulfilled").await;
    let lost = app.sandbox.dispute(&other_payment, None, false).unwrap();
    let report = app.audit().await;
    let problems: Vec<(&str, &str)> = report
        .discrepancies
        .iter()
        .map(|d| (d.problem, d.payment_id.as_str()))
        .collect();
    assert_eq!(
        problems,
        [("dispute_unrecorded", other_payment.as_str())],
        "{}",
        report.render()
    );
    // Reconciliation's sweep reads it from the provider's listing and records it; its webhook,
    // arriving late after all, changes nothing more.
    let schedule = app.reconcile_schedule().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    app.reconcile_now(&schedule, 0).await;
    disputed(other.clone(), other_payment.clone()).await;
    schedule.delete(Default::default()).await.unwrap();
    let r = app.deliver(&lost).await;
    assert_eq!(r.body["status"], "dispute_recorded", "{}", r.body);

    // A payment refunded after a cancel, then disputed: the shop would pay it back twice, so
    // ops are told to contest the dispute with the refund.
    let refunded = order("dispute-refunded", "course").await;
    let refunded_payment = app.checkout_and_pay(&refunded, None).await;
    app.wait_status(&refunded, "fulfilled").await;
    let r = app.cancel(&refunded, "user").await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.refunded(&refunded_payment).await;
    app.sandbox
        .dispute(&refunded_payment, None, true)
        .expect("a refunded payment can still be disputed");
    disputed(refunded.clone(), refunded_payment.clone()).await;

    let report = app.audit_settled(60).await;
    let seen: Vec<(&str, i64, i64, bool)> = report
        .disputes
        .iter()
        .map(|d| {
            (
                d.order_id.as_str(),
                d.amount,
                d.revoked_entitlements,
                d.flagged_for_ops,
            )
        })
        .collect();
    let mut want = vec![
        (course.as_str(), 800, 1, false),
        (lamp.as_str(), 400, 0, true),
        (other.as_str(), 800, 1, false),
        (refunded.as_str(), 800, 0, true),
    ];
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    want.sort();
    assert_eq!(seen_sorted, want, "{}", report.render());
    assert_eq!(
        (report.disputed.count, report.disputed.amount),
        (4, 2800),
        "{}",
        report.render()
    );
    let detail = &report
        .disputes
        .iter()
        .find(|d| d.order_id == refunded)
        .unwrap()
        .detail;
    assert!(detail.contains("refund is succeeded"), "{detail}");
    // Ops see them on /metrics, by what was done.
    let metrics = app.scrape(&format!("{}/metrics", app.base)).await;
    for line in [
        "orderflow_disputes_total{action=\"flagged_for_ops\"} 2",
        "orderflow_disputes_total{action=\"entitlements_revoked\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    // Each disputed payment is still what it was: applied to its order, or refunded.
    assert_eq!(
        (report.applied.count, report.refunded.count),
        (3, 1),
        "{}",
        report.render()
    );
    app.assert_invariants().await;
}

/// `POST /v1/admin/orders/{order_id}/refunds` with `key`.
async fn refund(app: &TestApp, order_id: &str, key: &str, body: Value) -> common::Reply {
    app.as_admin()
        .post_keyed(&format!("/v1/admin/orders/{order_id}/refunds"), key, body)
        .await
}

/// The order's partial refunds, once none is pending any more.
async fn refunds_settled(app: &TestApp, order_id: &str) -> Vec<Value> {
    app.eventually(60, "the partial refunds to end", || async {
        let r = app
            .as_admin()
            .get(&format!("/v1/orders/{order_id}/refunds"))
            .await;
        let refunds = r.body["refunds"].as_array()?.clone();
        refunds
            .iter()
            .all(|f| f["status"] != "pending")
            .then_some(refunds)
    })
    .await
}

/// What the provider refunded of `payment`.
fn provider_refunds(app: &TestApp, payment: &str) -> Vec<i64> {
    app.sandbox
        .refunds()
        .iter()
        .filter(|r| r.payment_id == payment)
        .map(|r| r.amount)
        .collect()
}

/// Issue 14, point 4: an admin refunds part of a paid order, by amount and then by lines. The
/// refund is split over the payment, wallet, points and coupon in proportion; a request sent
/// ten times at once is one refund at the provider; a refund beyond what is left is refused
/// with nothing recorded; the last refund gives back exactly the rest; a partially refunded
/// order is not cancelled whole.
#[tokio::test]
async fn a_partial_refund_sent_ten_times_refunds_once_in_proportion_and_never_beyond_the_capture() {
    let app = spawn_app().await;
    let coupon = shop(&app).await;
    // 2,000: 500 coupon, 200 points, 300 wallet, 1,000 paid.
    let body = json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 2}], "coupon_id": coupon,
                      "points": 200, "wallet_amount": 300});
    let order_id = id(&app.create_order("partial", body).await.body);
    let payment = app.checkout_and_pay(&order_id, None).await;
    app.wait_shipment(&order_id, "pending").await;

    // Half the order's value, sent ten times at once with one key.
    let half = json!({"amount": 1000, "reason": "goodwill"});
    let sent = futures::future::join_all(
        (0..10).map(|_| refund(&app, &order_id, "goodwill-1", half.clone())),
    )
    .await;
    let mut statuses: Vec<u16> = sent.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 200, 200, 201],
        "{:?}",
        sent.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let ids: std::collections::BTreeSet<&str> = sent
        .iter()
        .map(|r| r.body["refund_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let refunds = refunds_settled(&app, &order_id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["status"], "succeeded", "{}", refunds[0]);
    assert_eq!(
        refunds[0]["split"],
        json!({"payment": 500, "wallet": 150, "points": 100, "coupon": 250})
    );
    assert_eq!(provider_refunds(&app, &payment), [500]);
    let wallet = app.as_user("alice").get("/v1/wallets/alice").await.body;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["spent"].as_i64()),
        (Some(850), Some(150))
    );
    let coupon_now = app
        .as_user("alice")
        .get(&format!("/v1/coupons/{coupon}"))
        .await
        .body;
    assert_eq!(coupon_now["balance"], 250, "{coupon_now}");

    // Beyond what is left: refused, nothing recorded, nothing at the provider.
    let over = refund(
        &app,
        &order_id,
        "too-much",
        json!({"amount": 1001, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(
        (over.status, over.code()),
        (422, "refund_exceeds_capture"),
        "{}",
        over.body
    );
    let lines_over = refund(
        &app,
        &order_id,
        "three-lamps",
        json!({"lines": [{"sku": "lamp", "quantity": 3}], "reason": "damaged"}),
    )
    .await;
    assert_eq!(
        (lines_over.status, lines_over.code()),
        (422, "quantity_exceeds_order")
    );
    // The key of the first refund with another body.
    let reused = refund(
        &app,
        &order_id,
        "goodwill-1",
        json!({"amount": 10, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, "idempotency_key_reused")
    );
    let both = refund(
        &app,
        &order_id,
        "both",
        json!({"amount": 10, "lines": [{"sku": "lamp", "quantity": 1}], "reason": "goodwill"}),
    )
    .await;
    assert_eq!((both.status, both.code()), (422, "invalid_refund"));
    assert_eq!(refunds_settled(&app, &order_id).await.len(), 1);
    assert_eq!(provider_refunds(&app, &payment), [500]);

    // A whole cancel would give back again what the refund gave: refused.
    let cancel = app.cancel(&order_id, "admin").await;
    assert_eq!(
        (cancel.status, cancel.code()),
        (409, "order_partially_refunded")
    );

    // One lamp (1,000) is exactly what is left: every source gets back the rest.
    let line = refund(
        &app,
        &order_id,
        "one-lamp",
        json!({"lines": [{"sku": "lamp", "quantity": 1}], "reason": "damaged"}),
    )
    .await;
    assert_eq!(line.status, 201, "{}", line.body);
    let refunds = refunds_settled(&app, &order_id).await;
    assert_eq!(refunds.len(), 2);
    assert_eq!(
        refunds[1]["split"],
        json!({"payment": 500, "wallet": 150, "points": 100, "coupon": 250})
    );
    assert_eq!(provider_refunds(&app, &payment), [500, 500]);
    let wallet = app.as_user("alice").get("/v1/wallets/alice").await.body;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["spent"].as_i64()),
        (Some(1000), Some(0))
    );
    let points = app.as_user("alice").get("/v1/points/alice").await.body;
    assert_eq!(points["points"], 300, "{points}");
    let nothing_left = refund(
        &app,
        &order_id,
        "more",
        json!({"amount": 1, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(
        (nothing_left.status, nothing_left.code()),
        (422, "refund_exceeds_capture")
    );

    let steps = app.steps(&order_id).await;
    let done = steps
        .iter()
        .filter(|s| s.starts_with("partial_refund:") && s.ends_with(":succeeded"))
        .count();
    assert_eq!(done, 2, "{steps:?}");
    let report = app.audit_settled(60).await;
    assert_eq!(
        (
            report.partially_refunded.count,
            report.partially_refunded.amount
        ),
        (2, 1000),
        "{}",
        report.render()
    );
    let metrics = app.scrape(&format!("{}/metrics", app.base)).await;
    assert!(
        metrics
            .contains("orderflow_partial_refunds_total{kind=\"amount\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    app.assert_invariants().await;
}

/// Issue 14, point 4: a customer returns one line of two after shipping; receiving it restocks
/// the returned quantity and refunds its value in proportion; a second receive changes nothing.
#[tokio::test]
async fn a_return_of_one_line_of_two_restocks_it_and_refunds_its_share() {
    let app = spawn_app().await;
    shop(&app).await;
    app.put_sku_with(
        "shade",
        json!({"price": 500, "stock": 50, "kind": "physical"}),
    )
    .await;
    // 2,000: 200 points, 1,800 paid.
    let body = json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}, {"sku": "shade", "quantity": 2}],
                      "points": 200});
    let order_id = id(&app.create_order("return", body).await.body);
    let payment = app.checkout_and_pay(&order_id, None).await;
    app.wait_shipment(&order_id, "pending").await;
    // Nothing has shipped yet: nothing to return.
    let early = app
        .as_user("alice")
        .post_keyed(
            &format!("/v1/orders/{order_id}/returns"),
            "early",
            json!({"lines": [{"sku": "shade", "quantity": 1}], "reason": "damaged"}),
        )
        .await;
    assert_eq!((early.status, early.code()), (409, "order_not_returnable"));
    assert_eq!(ship(&app, &order_id).await.status, 200);

    let returns_path = format!("/v1/orders/{order_id}/returns");
    let ask = || {
        app.as_user("alice").post_keyed(
            &returns_path,
            "ret-1",
            json!({"lines": [{"sku": "shade", "quantity": 1}], "reason": "damaged"}),
        )
    };
    let asked = ask().await;
    assert_eq!(asked.status, 201, "{}", asked.body);
    assert_eq!(asked.body["status"], "requested");
    assert_eq!(asked.body["requested_by"], "user:alice");
    let return_id = asked.body["return_id"].as_str().unwrap().to_owned();
    let again = ask().await;
    assert_eq!(
        (again.status, again.body["return_id"].as_str()),
        (200, Some(return_id.as_str()))
    );
    // Another user's order is not found; more than is left to return is refused.
    let bob = app
        .as_user("bob")
        .post_keyed(
            &format!("/v1/orders/{order_id}/returns"),
            "ret-bob",
            json!({"lines": [{"sku": "shade", "quantity": 1}], "reason": "damaged"}),
        )
        .await;
    assert_eq!((bob.status, bob.code()), (404, "order_not_found"));
    let too_many = app
        .as_user("alice")
        .post_keyed(
            &format!("/v1/orders/{order_id}/returns"),
            "ret-2",
            json!({"lines": [{"sku": "shade", "quantity": 2}], "reason": "damaged"}),
        )
        .await;
    assert_eq!(
        (too_many.status, too_many.code()),
        (422, "quantity_exceeds_order")
    );
    // Only an admin receives it.
    let path = format!("/v1/admin/returns/{return_id}/receive");
    assert_eq!(
        app.as_user("alice").post(&path, json!({})).await.status,
        403
    );
    let stock_before = app.sku("shade").await;

    let received = app.as_admin().post(&path, json!({})).await;
    assert_eq!(received.status, 200, "{}", received.body);
    assert_eq!(received.body["status"], "received");
    let refunds = refunds_settled(&app, &order_id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let f = &refunds[0];
    assert_eq!(
        (
            f["kind"].as_str(),
            f["status"].as_str(),
            f["value"].as_i64(),
            f["return_id"].as_str()
        ),
        (
            Some("return"),
            Some("succeeded"),
            Some(500),
            Some(return_id.as_str())
        )
    );
    // 500 of 2,000 paid as 1,800 + 200 points: a quarter of each.
    assert_eq!(
        f["split"],
        json!({"payment": 450, "wallet": 0, "points": 50, "coupon": 0})
    );
    assert_eq!(provider_refunds(&app, &payment), [450]);
    let stock_after = app.sku("shade").await;
    assert_eq!(
        (
            stock_after["available"].as_i64().unwrap()
                - stock_before["available"].as_i64().unwrap(),
            stock_after["sold"].as_i64()
        ),
        (1, Some(1))
    );
    let ret = app
        .eventually(30, "the return to be refunded", || async {
            let list = app
                .as_user("alice")
                .get(&format!("/v1/orders/{order_id}/returns"))
                .await;
            let r = list.body["returns"][0].clone();
            (r["status"] == "refunded").then_some(r)
        })
        .await;
    assert_eq!(ret["refund_id"], f["refund_id"]);
    // Receiving it again changes nothing.
    let twice = app.as_admin().post(&path, json!({})).await;
    assert_eq!(
        (twice.status, twice.body["status"].as_str()),
        (200, Some("refunded"))
    );
    assert_eq!(
        app.sku("shade").await["available"],
        stock_after["available"]
    );
    assert_eq!(provider_refunds(&app, &payment), [450]);

    let steps = app.steps(&order_id).await;
    for step in ["requested", "received", "refunded"] {
        assert!(
            steps.contains(&format!("return:{return_id}:{step}")),
            "{step}: {steps:?}"
        );
    }
    app.assert_invariants().await;
}

/// Issue 14, point 4: a partial refund the provider refuses ends `failed`, gives nothing back
/// to the wallet, points or coupon, publishes `refund.failed`, and frees its part: a new
/// request for the same amount then succeeds, once.
#[tokio::test]
async fn a_partial_refund_the_provider_refuses_gives_nothing_back_and_frees_its_part() {
    use orderflow_sandbox::{Fault, Op, ScriptedFault};
    let app = spawn_app().await;
    let coupon = shop(&app).await;
    let body = json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}], "coupon_id": coupon,
                      "points": 100, "wallet_amount": 100});
    let order_id = id(&app.create_order("refused", body).await.body);
    let payment = app.checkout_and_pay(&order_id, None).await;
    app.wait_shipment(&order_id, "pending").await;
    let wallet_before = app.as_user("alice").get("/v1/wallets/alice").await.body;

    app.sandbox.add_fault(ScriptedFault {
        op: Op::Refund,
        times: 1,
        fault: Fault {
            status: Some(422),
            ..Fault::default()
        },
    });
    let all = json!({"amount": 1000, "reason": "not_received"});
    let first = refund(&app, &order_id, "refused-1", all.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let refunds = refunds_settled(&app, &order_id).await;
    assert_eq!(refunds[0]["status"], "failed", "{}", refunds[0]);
    assert!(
        refunds[0]["failure"]
            .as_str()
            .unwrap()
            .contains("injected_fault"),
        "{}",
        refunds[0]
    );
    assert!(provider_refunds(&app, &payment).is_empty());
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body,
        wallet_before
    );
    let steps = app.steps(&order_id).await;
    let failed = format!(
        "partial_refund:{}:failed",
        refunds[0]["refund_id"].as_str().unwrap()
    );
    assert!(steps.contains(&failed), "{steps:?}");

    // Its part is free again: asked anew, with a new key, the whole value is refunded once.
    let second = refund(&app, &order_id, "refused-2", all).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let refunds = refunds_settled(&app, &order_id).await;
    assert_eq!(refunds[1]["status"], "succeeded", "{}", refunds[1]);
    assert_eq!(
        refunds[1]["split"],
        json!({"payment": 300, "wallet": 100, "points": 100, "coupon": 500})
    );
    assert_eq!(provider_refunds(&app, &payment), [300]);
    let wallet = app.as_user("alice").get("/v1/wallets/alice").await.body;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["spent"].as_i64()),
        (Some(1000), Some(0))
    );
    app.assert_invariants().await;
}

/// The sandbox's payment: (status, captured amount).
fn at_provider(app: &TestApp, payment: &str) -> (String, i64) {
    let p = app
        .sandbox
        .payments()
        .into_iter()
        .find(|p| p.payment_id == payment)
        .expect("the sandbox has the payment");
    (p.status, p.captured)
}

/// Issue 14, points 1 and 2, with `ORDER_CAPTURE=at_shipment`:
/// - a physical order is authorized at checkout and captured when it ships, once; nothing of
///   it can be refunded in part before that;
/// - a digital order is still captured at once;
/// - a cancel before shipping voids the authorization: no refund at the provider, and every
///   hold goes back;
/// - a void that comes too late (the provider captured first) is refunded instead, once.
#[tokio::test]
async fn authorize_then_capture_at_shipment_and_void_on_cancel_or_refund_when_too_late() {
    let app = common::spawn_app_tuned(common::Tuning::at_shipment()).await;
    let coupon = shop(&app).await;

    // Authorize -> ship -> capture.
    let lamp = id(&app
        .create_order(
            "auth-ship",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}]}),
        )
        .await
        .body);
    let payment = app.checkout_and_pay(&lamp, None).await;
    app.wait_shipment(&lamp, "pending").await;
    let o = app.order(&lamp).await;
    assert_eq!(o["status"], "paid", "{o}");
    assert!(o["payments"][0]["capture_before"].is_string(), "{o}");
    assert!(o["payments"][0]["captured_at"].is_null(), "{o}");
    assert_eq!(at_provider(&app, &payment), ("authorized".into(), 0));
    let r = refund(
        &app,
        &lamp,
        "too-soon",
        json!({"amount": 100, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "payment_not_captured"),
        "{}",
        r.body
    );
    let shipped = ship(&app, &lamp).await;
    assert_eq!(shipped.status, 200, "{}", shipped.body);
    assert_eq!(shipped.body["status"], "fulfilled");
    assert_eq!(at_provider(&app, &payment), ("captured".into(), 1000));
    assert!(app.order(&lamp).await["payments"][0]["captured_at"].is_string());
    assert!(
        app.steps(&lamp)
            .await
            .contains(&format!("captured:{payment}"))
    );
    assert_eq!(app.sandbox.requests(orderflow_sandbox::Op::Capture), 1);

    // Digital goods: captured at once.
    let course = id(&app
        .create_order(
            "auth-digital",
            json!({"user_id": "alice", "items": [{"sku": "course", "quantity": 1}]}),
        )
        .await
        .body);
    let digital = app.checkout_and_pay(&course, None).await;
    app.wait_status(&course, "fulfilled").await;
    assert_eq!(at_provider(&app, &digital), ("captured".into(), 800));

    // Authorize -> cancel -> void: nothing refunded, everything back.
    let body = json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 2}], "coupon_id": coupon,
                      "points": 200, "wallet_amount": 300});
    let voided = id(&app.create_order("auth-cancel", body).await.body);
    let held = app.checkout_and_pay(&voided, None).await;
    app.wait_shipment(&voided, "pending").await;
    let r = app.cancel(&voided, "user").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    let refunds = r.body["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{}", r.body);
    assert_eq!(
        (refunds[0]["status"].as_str(), refunds[0]["method"].as_str()),
        (Some("succeeded"), Some("void"))
    );
    assert_eq!(at_provider(&app, &held), ("voided".into(), 0));
    assert!(provider_refunds(&app, &held).is_empty());
    assert_eq!(
        app.sku("lamp").await["available"],
        49,
        "one lamp sold, two back"
    );
    assert_eq!(
        app.as_user("alice").get("/v1/wallets/alice").await.body["spent"],
        0
    );

    // A void too late: the provider captured first, so the payment is refunded, once.
    app.sandbox.add_fault(orderflow_sandbox::ScriptedFault {
        op: orderflow_sandbox::Op::Void,
        times: 1,
        fault: orderflow_sandbox::Fault {
            capture_first: true,
            ..Default::default()
        },
    });
    let late = id(&app
        .create_order(
            "auth-late",
            json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}]}),
        )
        .await
        .body);
    let captured = app.checkout_and_pay(&late, None).await;
    app.wait_shipment(&late, "pending").await;
    let r = app.cancel(&late, "user").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refunds = r.body["refunds"].as_array().unwrap();
    assert_eq!(
        (refunds[0]["status"].as_str(), refunds[0]["method"].as_str()),
        (Some("succeeded"), Some("refund"))
    );
    assert_eq!(at_provider(&app, &captured), ("captured".into(), 1000));
    assert_eq!(provider_refunds(&app, &captured), [1000]);

    for order in [&lamp, &course, &voided, &late] {
        app.settled(order).await;
    }
    app.assert_invariants().await;
    let report = app.audit().await;
    assert_eq!(report.voided.count, 1, "{}", report.render());
    assert_eq!(report.authorized.count, 0, "{}", report.render());
}

/// Issue 14, point 1: an authorization still unshipped near its `capture_before` is never left
/// to lapse. With a 12 s authorization and a 6 s margin, one deployment captures it (and the
/// later shipment captures nothing more); another voids it and cancels the order.
#[tokio::test]
async fn an_authorization_nearing_expiry_is_captured_or_voided_as_configured() {
    use orderflow_workflows::model::AuthorizationExpiry;
    let ttl = std::time::Duration::from_secs(12);
    for on_expiry in [AuthorizationExpiry::Capture, AuthorizationExpiry::Void] {
        let app = common::spawn_app_tuned(common::Tuning::expiring(ttl, 6, on_expiry)).await;
        shop(&app).await;
        let created = app
            // One key per deployment: the two share the Temporal server, and so workflow ids.
            .create_order(
                &format!("expiring-{on_expiry:?}"),
                json!({"user_id": "alice", "items": [{"sku": "lamp", "quantity": 1}],
                       "points": 100}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let order_id = id(&created.body);
        let payment = app.checkout_and_pay(&order_id, None).await;
        app.wait_shipment(&order_id, "pending").await;
        assert_eq!(at_provider(&app, &payment), ("authorized".into(), 0));
        match on_expiry {
            AuthorizationExpiry::Capture => {
                app.eventually(30, "the authorization to be captured", || async {
                    (at_provider(&app, &payment).0 == "captured").then_some(())
                })
                .await;
                assert_eq!(app.order(&order_id).await["status"], "paid");
                let shipped = ship(&app, &order_id).await;
                assert_eq!(shipped.status, 200, "{}", shipped.body);
                assert_eq!(app.sandbox.requests(orderflow_sandbox::Op::Capture), 1);
                assert_eq!(at_provider(&app, &payment), ("captured".into(), 900));
            }
            AuthorizationExpiry::Void => {
                let o = app.wait_status(&order_id, "cancelled").await;
                assert_eq!(o["cancel_reason"], "authorization_expiring", "{o}");
                // The cancel commits first; the void follows, on the refund row.
                let voided = app.refunded(&payment).await;
                assert!(
                    matches!(
                        voided,
                        orderflow_workflows::model::RefundOutcome::Succeeded { voided: true, .. }
                    ),
                    "{voided:?}"
                );
                assert_eq!(at_provider(&app, &payment), ("voided".into(), 0));
                assert!(provider_refunds(&app, &payment).is_empty());
                assert_eq!(app.sku("lamp").await["available"], 50);
                assert_eq!(
                    app.as_user("alice").get("/v1/points/alice").await.body["points"],
                    300
                );
            }
        }
        app.settled(&order_id).await;
        app.assert_invariants().await;
    }
}
