//! The production surface (issue 5): authentication and authorisation (a BOLA matrix), input
//! limits, health and readiness, metrics. Real dev server, real database. Each test ends with
//! `assert_invariants()`.

mod common;

use common::{JWT_SECRET, TestApp, spawn_app, user_token};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["order_id"].as_str().expect("order_id").to_owned()
}

/// A request as `token` (or with no token at all).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> common::Reply {
    app.with_token(token).call(method, path, body).await
}

/// Everything that could change, as one value: orders, stock, bob's accounts.
async fn snapshot(app: &TestApp, bob_order: &str, coupon: &str) -> Value {
    json!({
        "order": app.order(bob_order).await,
        "sku": app.sku("book").await,
        "coupon": app.as_admin().get(&format!("/v1/coupons/{coupon}")).await.body,
        "wallet": app.as_user("bob").get("/v1/wallets/bob").await.body,
        "points": app.as_user("bob").get("/v1/points/bob").await.body,
        "orders": app.as_admin().get("/v1/orders").await.body["orders"].as_array().unwrap().len(),
    })
}

#[tokio::test]
async fn users_reach_only_their_own_things_and_admin_routes_need_admin() {
    let app = spawn_app().await;
    app.put_sku("book", 1500, 10).await;
    app.credit_wallet("bob", 500).await;
    app.credit_points("bob", 100).await;
    let coupon = app.create_coupon("bob", "amount", 300).await;
    let bob = user_token("bob");
    let alice = user_token("alice");
    let created = call(
        &app,
        "POST",
        "/v1/orders",
        Some(&bob),
        Some(json!({"items": [{"sku": "book", "quantity": 1}], "coupon_id": coupon, "points": 50})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["user_id"], "bob",
        "user_id taken from the token"
    );
    let order = id(&created.body);
    let before = snapshot(&app, &order, &coupon).await;

    // Alice, with Bob's ids: 404 everywhere, as if they did not exist.
    let scoped = [
        ("GET", format!("/v1/orders/{order}"), None),
        ("GET", format!("/v1/orders/{order}/events"), None),
        ("POST", format!("/v1/orders/{order}/pay"), Some(json!({}))),
        (
            "POST",
            format!("/v1/orders/{order}/cancel"),
            Some(json!({"reason": "user"})),
        ),
        ("GET", format!("/v1/coupons/{coupon}"), None),
        ("GET", "/v1/wallets/bob".to_owned(), None),
        ("GET", "/v1/points/bob".to_owned(), None),
        ("GET", "/v1/entitlements/bob".to_owned(), None),
    ];
    for (method, path, body) in &scoped {
        let r = call(&app, method, path, Some(&alice), body.clone()).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert!(
            r.code().ends_with("_not_found"),
            "{method} {path}: {}",
            r.body
        );
    }
    // Nor can she act in Bob's name, or list his orders.
    let r = call(
        &app,
        "POST",
        "/v1/orders",
        Some(&alice),
        Some(json!({"user_id": "bob", "items": [{"sku": "book", "quantity": 1}]})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "user_mismatch"));
    let r = call(&app, "GET", "/v1/orders?user_id=bob", Some(&alice), None).await;
    assert_eq!((r.status, r.code()), (403, "user_mismatch"));
    // Nor redeem a code in his name (the code exists: only the user is wrong).
    app.put_sku("ebook", 500, 10).await;
    let code = app
        .as_admin()
        .post(
            "/v1/admin/codes",
            json!({"code": "BOLA-1", "sku": "ebook", "max_uses": 5}),
        )
        .await;
    assert_eq!(code.status, 201, "{}", code.body);
    let r = call(
        &app,
        "POST",
        "/v1/redemptions",
        Some(&alice),
        Some(json!({"user_id": "bob", "code": "BOLA-1"})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "user_mismatch"), "{}", r.body);
    let granted = call(&app, "GET", "/v1/entitlements/bob", Some(&bob), None).await;
    assert_eq!(
        granted.body["entitlements"].as_array().map(Vec::len),
        Some(0),
        "{}",
        granted.body
    );
    let r = call(&app, "GET", "/v1/orders", Some(&alice), None).await;
    assert_eq!(
        r.body["orders"].as_array().unwrap().len(),
        0,
        "her list is her own"
    );
    // Bob sees his own.
    let r = call(
        &app,
        "GET",
        &format!("/v1/orders/{order}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    // A user token on admin routes: 403.
    let admin_routes = [
        ("GET", "/v1/admin/audit", json!({})),
        ("POST", "/v1/admin/refunds/pay_x/retry", json!({})),
        (
            "PUT",
            "/v1/admin/skus/book",
            json!({"price": 1, "stock": 1}),
        ),
        (
            "POST",
            "/v1/admin/coupons",
            json!({"user_id": "alice", "kind": "amount", "amount": 1}),
        ),
        (
            "POST",
            "/v1/admin/wallets/alice/credit",
            json!({"amount": 1}),
        ),
        (
            "POST",
            "/v1/admin/points/alice/credit",
            json!({"points": 1}),
        ),
        (
            "POST",
            "/v1/admin/orders",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "payment_method": "wallet"}),
        ),
        (
            "POST",
            "/v1/admin/codes",
            json!({"code": "X", "sku": "book", "max_uses": 1}),
        ),
    ];
    for (method, path, body) in &admin_routes {
        let r = call(&app, method, path, Some(&bob), Some(body.clone())).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{method} {path}");
    }
    let r = call(
        &app,
        "POST",
        &format!("/v1/admin/orders/{order}/ship"),
        Some(&bob),
        Some(json!({})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // An admin-reason cancel is an admin's.
    let r = call(
        &app,
        "POST",
        &format!("/v1/orders/{order}/cancel"),
        Some(&bob),
        Some(json!({"reason": "admin"})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Missing, forged and expired tokens: 401, on user and admin routes alike.
    let forged = orderflow_api::auth::mint(
        "not-the-secret",
        "bob",
        orderflow_api::auth::Role::Admin,
        3600,
    );
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = orderflow_api::auth::Claims {
            sub: "bob".into(),
            role: orderflow_api::auth::Role::User,
            exp: 1,
        };
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    for token in [
        None,
        Some(forged.as_str()),
        Some(expired.as_str()),
        Some("garbage"),
    ] {
        for (method, path) in [
            ("GET", format!("/v1/orders/{order}")),
            ("GET", "/v1/orders".to_owned()),
            ("PUT", "/v1/admin/skus/book".to_owned()),
        ] {
            let body = (method == "PUT").then(|| json!({"price": 1, "stock": 1}));
            let r = call(&app, method, &path, token, body).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized"),
                "{method} {path} with {token:?}"
            );
        }
    }
    // The webhook needs no token (its signature is its authentication); health needs none.
    let r = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);

    assert_eq!(
        snapshot(&app, &order, &coupon).await,
        before,
        "nothing changed"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn every_input_limit_answers_a_clear_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    app.put_sku("book", 1500, 1000).await;
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"sku": format!("s{i}"), "quantity": 1}))
        .collect();
    let cases = [
        (
            json!({"user_id": "alice", "items": too_many}),
            422,
            "invalid_items",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 10_001}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 0}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "points": i64::MAX}),
            422,
            "invalid_amount",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "wallet_amount": 1_000_000_000_000_001i64}),
            422,
            "invalid_amount",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let r = app.create_order(&format!("limit-{i}"), body).await;
        assert_eq!((r.status, r.code()), (status, code), "{}", r.body);
    }
    // A body over the cap: 413, before it is parsed.
    let huge = "x".repeat(70 * 1024);
    let r = app
        .create_order(
            "huge",
            json!({"user_id": "alice", "items": [{"sku": huge, "quantity": 1}]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "body_too_large"));
    let r = app
        .send(
            app.http
                .post(format!("{}/v1/payments/webhook", app.base))
                .body(vec![b'{'; 65 * 1024]),
        )
        .await;
    assert_eq!(r.status, 413);
    // Page size.
    let r = app.as_admin().get("/v1/orders?limit=101").await;
    assert_eq!((r.status, r.code()), (422, "invalid_limit"));
    assert_eq!(
        app.as_admin().get("/v1/orders").await.body["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Open unpaid orders per user (20 in tests): the 21st is 429 and holds nothing.
    for i in 0..20 {
        let r = app
            .create_order(
                &format!("open-{i}"),
                json!({"user_id": "hoarder", "items": [{"sku": "book", "quantity": 1}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = app
        .create_order(
            "open-20",
            json!({"user_id": "hoarder", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "too_many_open_orders"),
        "{}",
        r.body
    );
    assert_eq!(app.sku("book").await["reserved"], 20);
    // A retried create of an order that exists is answered by that order: idempotency wins
    // over the cap.
    let again = app
        .create_order(
            "open-0",
            json!({"user_id": "hoarder", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);

    // The cap is exact under concurrency: 25 creates at once, 20 orders.
    let keys: Vec<String> = (0..25).map(|i| format!("rush-{i}")).collect();
    let creates = keys.iter().map(|key| {
        app.create_order(
            key,
            json!({"user_id": "rusher", "items": [{"sku": "book", "quantity": 1}]}),
        )
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    assert!(
        answers
            .iter()
            .all(|r| r.status == 201 || (r.status, r.code()) == (429, "too_many_open_orders")),
        "{:?}",
        answers.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(created, 20, "exactly the cap");
    assert_eq!(app.sku("book").await["reserved"], 40);
    let listed = app.as_admin().get("/v1/orders?status=fulfilled").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let r = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"status": "ok", "database": "ok", "temporal": "ok"})
    );
    // With the database gone, not ready (and it says which).
    app.db.close().await;
    let r = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["database"].as_str()),
        (503, Some("unavailable"))
    );
}

fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_as_orders_are_paid_cancelled_rejected_and_refunded() {
    let app = spawn_app().await;
    app.put_sku("book", 1500, 10).await;
    // Prometheus text, no token needed.
    let url = format!("{}/metrics", app.base);
    let m0 = app.scrape(&url).await;

    let paid = id(&app
        .create_order(
            "m-paid",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}]}),
        )
        .await
        .body);
    app.checkout_and_pay(&paid, None).await;
    app.wait_status(&paid, "fulfilled").await;
    let late = id(&app.create_order("m-late", json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 1})).await.body);
    app.settled(&late).await;
    let event = app.captured(&late, 1500);
    assert_eq!(app.deliver(&event).await.status, 200);
    app.refunded(&event.payment_id).await;
    let rejected = app
        .create_order(
            "m-rejected",
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 99}]}),
        )
        .await;
    assert_eq!(rejected.status, 422);
    let bad = app.webhook_with(b"{}".to_vec(), None).await;
    assert_eq!(bad.status, 401);

    let m1 = app.scrape(&url).await;
    let grew = |name: &str, by: f64| {
        let (a, b) = (sample(&m0, name), sample(&m1, name));
        assert!(b - a >= by, "{name}: {a} -> {b}\n{m1}");
    };
    grew("orderflow_orders_created_total", 3.0);
    grew("orderflow_orders_paid_total", 1.0);
    grew("orderflow_orders_cancelled_total{reason=\"timeout\"}", 1.0);
    grew(
        "orderflow_orders_rejected_total{code=\"insufficient_stock\"}",
        1.0,
    );
    grew("orderflow_refunds_total{outcome=\"succeeded\"}", 1.0);
    grew(
        "orderflow_webhook_requests_total{outcome=\"signalled\"}",
        1.0,
    );
    grew(
        "orderflow_webhook_requests_total{outcome=\"refund_started\"}",
        1.0,
    );
    grew(
        "orderflow_webhook_requests_total{outcome=\"signature_missing\"}",
        1.0,
    );
    grew(
        "orderflow_http_requests_total{method=\"POST\",route=\"/v1/orders\",status=\"201\"}",
        2.0,
    );
    assert!(
        m1.contains(
            "orderflow_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/orders\""
        ),
        "{m1}"
    );

    // The worker's own metrics, from the SDK, on the worker's port.
    let worker = app
        .worker_metrics
        .expect("the in-process worker serves metrics");
    let w = app.scrape(&format!("http://{worker}/metrics")).await;
    assert!(w.contains("temporal_"), "{w}");
    app.settled(&paid).await;
    app.assert_invariants().await;
}
