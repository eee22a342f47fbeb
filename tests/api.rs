//! The fast tier: the API's own rules, against the real router and a fresh database, with an
//! in-process stand-in for the workflow engine (`common::fast`). No Temporal, no sockets:
//! each test takes well under a second. What it covers: validation (bad input gets a clear
//! 4xx with a stable code, and reaches nothing), the access matrix of every documented route,
//! the one error shape, and how workflow refusals and an engine outage are answered. The
//! order lifecycle itself is tested end to end, on a real dev server, everywhere else.

mod common;

use common::fast::{Behaviour, FastApp, Who, fast_app};
use orderflow_workflows::refusal::{RefusalCode, Refused};
use serde_json::{Value, json};

/// A book and a pen for sale, and Alice's funds: as the end-to-end shop, written through the
/// admin API.
async fn shop(app: &FastApp) {
    for (sku, price, stock) in [("book", 1500, 10), ("pen", 200, 100)] {
        let r = app
            .call(
                Who::Admin,
                "PUT",
                &format!("/v1/admin/skus/{sku}"),
                Some(json!({"price": price, "stock": stock, "kind": "digital"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (path, body) in [
        ("/v1/admin/wallets/alice/credit", json!({"amount": 1000})),
        ("/v1/admin/points/alice/credit", json!({"points": 300})),
    ] {
        let r = app.call(Who::Admin, "POST", path, Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// Places an order for `user` through the fake engine (which writes its row as the workflow
/// would), and returns its id.
async fn placed(app: &FastApp, user: &str, key: &str) -> String {
    let body = json!({"items": [{"sku": "book", "quantity": 1}]});
    let r = app
        .call_keyed(Who::User(user), "POST", "/v1/orders", key, Some(body))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["order_id"].as_str().unwrap().to_owned()
}

/// `{"error": {"code", "message"[, "order_id"]}}` and nothing else.
fn assert_error_shape(r: &common::Reply, what: &str) {
    let error = r.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {}", r.body));
    assert_eq!(r.body.as_object().unwrap().len(), 1, "{what}: {}", r.body);
    let code = error["code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{what}: a stable snake_case code: {}",
        r.body
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.body
    );
    for key in error.keys() {
        assert!(
            ["code", "message", "order_id"].contains(&key.as_str()),
            "{what}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_reaches_nothing() {
    let app = fast_app().await;
    shop(&app).await;
    let cases = [
        (
            json!({"user_id": "alice", "items": []}),
            422,
            "invalid_items",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 0}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 10001}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}, {"sku": "book", "quantity": 1}]}),
            422,
            "duplicate_sku",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "points": -1}),
            422,
            "invalid_amount",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 0}),
            422,
            "invalid_payment_timeout",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 86401}),
            422,
            "invalid_payment_timeout",
        ),
        (
            json!({"user_id": "", "items": [{"sku": "book", "quantity": 1}]}),
            422,
            "invalid_user_id",
        ),
        (
            json!({"user_id": "alice", "items": [{"sku": "book", "quantity": "1"}]}),
            422,
            "invalid_body",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let key = format!("bad-{i}");
        let r = app
            .call_keyed(Who::Admin, "POST", "/v1/orders", &key, Some(body))
            .await;
        assert_eq!((r.status, r.code()), (status, code), "{}", r.body);
        assert_error_shape(&r, code);
    }
    let broken = axum::http::Request::post("/v1/orders")
        .header("Idempotency-Key", "x")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{nope"))
        .unwrap();
    let broken = app.send(Who::User("alice"), broken).await;
    assert_eq!((broken.status, broken.code()), (400, "invalid_json"));
    let r = app
        .call(Who::Admin, "GET", "/v1/orders?limit=1000", None)
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_limit"));
    let r = app
        .call(Who::Admin, "GET", "/v1/orders/ord_missing", None)
        .await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"));
    // Nothing reached the engine, and nothing was written.
    assert_eq!(app.engine.calls(), Vec::<String>::new());
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("holds").await, 0);
}

/// Every documented route, as nobody, as a user and as the admin: a route that takes a token
/// refuses a request without one (401), and an admin route refuses a user (403), before it
/// reads anything.
#[tokio::test]
async fn every_documented_route_refuses_the_callers_it_must() {
    let app = fast_app().await;
    let doc = app
        .call(Who::Nobody, "GET", "/openapi.json", None)
        .await
        .body;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("{order_id}", "ord_x")
                .replace("{payment_id}", "pay_x")
                .replace('{', "")
                .replace('}', "");
            let method = method.to_uppercase();
            let body = (method != "GET").then(|| json!({}));
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let admin = path.starts_with("/v1/admin/");
            let nobody = app
                .call(Who::Nobody, &method, &concrete, body.clone())
                .await;
            if secured {
                assert_eq!(
                    nobody.status, 401,
                    "{method} {path} without a token: {}",
                    nobody.body
                );
                assert_error_shape(&nobody, path);
            } else {
                assert_ne!(
                    nobody.status, 401,
                    "{method} {path} is documented as public"
                );
            }
            let user = app
                .call(Who::User("mallory"), &method, &concrete, body)
                .await;
            if admin {
                assert_eq!(
                    (user.status, user.code()),
                    (403, "forbidden"),
                    "{method} {path} as a user: {}",
                    user.body
                );
            }
            // 503 is the engine being down (the stand-in's default); a 500 is a bug.
            assert!(
                user.status != 500,
                "{method} {path} as a user: {}",
                user.body
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations documented");
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn a_users_things_are_hidden_from_other_users_and_open_to_the_admin() {
    let app = fast_app().await;
    shop(&app).await;
    let order = placed(&app, "alice", "mine").await;
    for path in [
        format!("/v1/orders/{order}"),
        format!("/v1/orders/{order}/events"),
    ] {
        let alice = app.call(Who::User("alice"), "GET", &path, None).await;
        assert_eq!(alice.status, 200, "{path}: {}", alice.body);
        let bob = app.call(Who::User("bob"), "GET", &path, None).await;
        assert_eq!((bob.status, bob.code()), (404, "order_not_found"), "{path}");
        let admin = app.call(Who::Admin, "GET", &path, None).await;
        assert_eq!(admin.status, 200, "{path}: {}", admin.body);
    }
    let listed = app.call(Who::User("bob"), "GET", "/v1/orders", None).await;
    assert_eq!(listed.body["orders"], json!([]), "his list is his own");
    let r = app
        .call(Who::User("bob"), "GET", "/v1/orders?user_id=alice", None)
        .await;
    assert_eq!((r.status, r.code()), (403, "user_mismatch"));
    assert_eq!(app.engine.calls(), vec![format!("place_order {order}")]);
}

/// Another user's wallet, points, coupon or order answers exactly what a missing one does (the
/// same status, code and message but for the id), so that ids do not leak.
#[tokio::test]
async fn another_users_things_answer_exactly_like_missing_ones() {
    let app = fast_app().await;
    shop(&app).await;
    let coupon = app
        .call(
            Who::Admin,
            "POST",
            "/v1/admin/coupons",
            Some(json!({"user_id": "alice", "kind": "amount", "amount": 100})),
        )
        .await;
    assert_eq!(coupon.status, 201, "{}", coupon.body);
    let coupon = coupon.body["coupon_id"].as_str().unwrap().to_owned();
    let order = placed(&app, "alice", "hidden").await;
    for (theirs, missing) in [
        ("/v1/wallets/alice".to_owned(), "/v1/wallets/nobody"),
        ("/v1/points/alice".to_owned(), "/v1/points/nobody"),
        (format!("/v1/coupons/{coupon}"), "/v1/coupons/nobody"),
        (format!("/v1/orders/{order}"), "/v1/orders/nobody"),
    ] {
        let hidden = app.call(Who::User("bob"), "GET", &theirs, None).await;
        let absent = app.call(Who::Admin, "GET", missing, None).await;
        let id = theirs.rsplit('/').next().unwrap();
        assert_eq!(hidden.status, 404, "{theirs}: {}", hidden.body);
        assert_eq!(
            hidden.body.to_string().replace(id, "nobody"),
            absent.body.to_string(),
            "{theirs} against {missing}"
        );
    }
}

#[tokio::test]
async fn workflow_refusals_are_answered_by_their_typed_code() {
    let app = fast_app().await;
    shop(&app).await;
    let order = placed(&app, "alice", "refused").await;
    let pay = format!("/v1/orders/{order}/pay");
    let cancel = format!("/v1/orders/{order}/cancel");
    let cases = [
        (
            RefusalCode::OrderNotPayable,
            pay.as_str(),
            409,
            "order_not_payable",
        ),
        (
            RefusalCode::ProviderUnavailable,
            pay.as_str(),
            503,
            "provider_unavailable",
        ),
        (
            RefusalCode::OrderAlreadyShipped,
            cancel.as_str(),
            409,
            "order_already_shipped",
        ),
    ];
    for (code, path, status, answered) in cases {
        app.engine.behave(Behaviour::Refuses(Refused::new(
            code,
            "because the test says so",
        )));
        let body = if path.ends_with("cancel") {
            json!({"reason": "user"})
        } else {
            json!({})
        };
        let r = app.call(Who::User("alice"), "POST", path, Some(body)).await;
        assert_eq!(
            (r.status, r.code()),
            (status, answered),
            "{code}: {}",
            r.body
        );
        assert_error_shape(&r, answered);
        assert_eq!(r.body["error"]["order_id"], order.as_str());
    }
}

#[tokio::test]
async fn when_the_engine_is_down_the_api_says_so_and_names_the_order() {
    let app = fast_app().await;
    shop(&app).await;
    let order = placed(&app, "alice", "down").await;
    app.engine.behave(Behaviour::Down);
    let r = app
        .call(
            Who::User("alice"),
            "POST",
            &format!("/v1/orders/{order}/pay"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "temporal_unavailable"),
        "{}",
        r.body
    );
    assert_eq!(r.body["error"]["order_id"], order.as_str());
    assert_error_shape(&r, "engine down");
    let ready = app.call(Who::Nobody, "GET", "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body,
        json!({"status": "unavailable", "database": "ok", "temporal": "unavailable"})
    );
    // The order is as it was: pending, read from the database.
    let o = app
        .call(
            Who::User("alice"),
            "GET",
            &format!("/v1/orders/{order}"),
            None,
        )
        .await;
    assert_eq!(o.body["status"], "pending_payment", "{}", o.body);
}

#[tokio::test]
async fn unknown_routes_and_unreadable_bodies_get_the_one_error_shape() {
    let app = fast_app().await;
    let cases: [(&str, &str, Option<Value>, u16, &str); 3] = [
        ("GET", "/v1/nowhere", None, 404, "route_not_found"),
        ("GET", "/v1/orders", None, 401, "unauthorized"),
        (
            "POST",
            "/v1/admin/coupons",
            Some(json!({"kind": "amount"})),
            422,
            "invalid_body",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let who = if path.starts_with("/v1/admin") {
            Who::Admin
        } else {
            Who::Nobody
        };
        let r = app.call(who, method, path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path}: {}",
            r.body
        );
        assert_error_shape(&r, path);
    }
    let text = axum::http::Request::post("/v1/admin/coupons")
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("hello"))
        .unwrap();
    let r = app.send(Who::Admin, text).await;
    assert_eq!(
        (r.status, r.code()),
        (415, "unsupported_media_type"),
        "{}",
        r.body
    );
    assert_error_shape(&r, "415");
}

#[tokio::test]
async fn event_subscriptions_refuse_bad_input_and_register_nothing() {
    let app = fast_app().await;
    for (body, code) in [
        (json!({"url": "ftp://example.com/hook"}), "invalid_url"),
        (json!({"url": "http://"}), "invalid_url"),
        (json!({"url": "https://exa mple.com"}), "invalid_url"),
        (json!({"url": "http://[::1]:8080/hook"}), "invalid_url"),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(2048))}),
            "invalid_url",
        ),
        (
            json!({"url": "http://example.com", "event_types": ["order.shipped"]}),
            "invalid_event_types",
        ),
        (
            json!({"url": "http://example.com", "event_types": ["order.paid", "order.paid"]}),
            "invalid_event_types",
        ),
        (
            json!({"url": "http://example.com", "event_types": []}),
            "invalid_event_types",
        ),
        (
            json!({"url": "http://example.com", "secret": "mine"}),
            "invalid_body",
        ),
    ] {
        let r = app
            .call(
                Who::Admin,
                "POST",
                "/v1/admin/event-subscriptions",
                Some(body.clone()),
            )
            .await;
        assert_eq!((r.status, r.code()), (422, code), "{body}: {}", r.body);
        assert_error_shape(&r, code);
    }
    let listed = app
        .call(Who::Admin, "GET", "/v1/admin/event-subscriptions", None)
        .await;
    assert_eq!(
        listed.body["subscriptions"],
        json!([]),
        "nothing registered"
    );

    let created = app
        .call(
            Who::Admin,
            "POST",
            "/v1/admin/event-subscriptions",
            Some(json!({"url": "https://example.com/hooks", "event_types": ["order.paid"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["event_types"], json!(["order.paid"]));
    let sub = created.body["subscription_id"].as_str().unwrap();
    for (path, code) in [
        (
            format!("/v1/admin/event-subscriptions/sub_nope"),
            "subscription_not_found",
        ),
        (
            format!("/v1/admin/event-subscriptions/sub_nope/deliveries"),
            "subscription_not_found",
        ),
        (
            format!("/v1/admin/event-subscriptions/{sub}/deliveries/evt_nope_1"),
            "delivery_not_found",
        ),
    ] {
        let r = app.call(Who::Admin, "GET", &path, None).await;
        assert_eq!((r.status, r.code()), (404, code), "{path}: {}", r.body);
    }
    let r = app
        .call(
            Who::Admin,
            "GET",
            &format!("/v1/admin/event-subscriptions/{sub}/deliveries?limit=0"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_limit"), "{}", r.body);

    // Disabling keeps the subscriber and its log readable, and a second disable changes
    // nothing; it is a POST, and there is no DELETE that would promise the record is gone.
    let disable = format!("/v1/admin/event-subscriptions/{sub}/disable");
    let first = app.call(Who::Admin, "POST", &disable, None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body["disabled_at"].is_string(), "{}", first.body);
    let again = app.call(Who::Admin, "POST", &disable, None).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["disabled_at"], first.body["disabled_at"]);
    let read = app
        .call(
            Who::Admin,
            "GET",
            &format!("/v1/admin/event-subscriptions/{sub}"),
            None,
        )
        .await;
    assert_eq!(
        read.body["disabled_at"], first.body["disabled_at"],
        "{}",
        read.body
    );
    let r = app
        .call(
            Who::Admin,
            "POST",
            "/v1/admin/event-subscriptions/sub_nope/disable",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "subscription_not_found"),
        "{}",
        r.body
    );
    let r = app
        .call(
            Who::Admin,
            "DELETE",
            &format!("/v1/admin/event-subscriptions/{sub}"),
            None,
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.body);
}

/// A session event and a dispute need no engine: with Temporal down, an unknown session is
/// answered `unknown_session` and a dispute is recorded once. Their bad fields get 422 with
/// their codes, and record nothing.
#[tokio::test]
async fn session_events_and_disputes_are_answered_without_the_engine_and_checked_like_payments() {
    let app = fast_app().await;
    app.engine.behave(Behaviour::Down);
    let session = json!({
        "event_id": "evt_session_1",
        "type": "checkout.session.expired",
        "order_id": "ord_nope",
        "session_id": "cs_nope",
        "amount": 1500,
        "currency": "USD",
    });
    let r = app.webhook(session.clone()).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("unknown_session")),
        "{}",
        r.body
    );
    for (field, value, code) in [
        ("session_id", json!(""), "invalid_session_id"),
        ("amount", json!(0), "invalid_amount"),
        ("currency", json!("XXX"), "invalid_currency"),
        ("session_id", Value::Null, "invalid_body"),
    ] {
        let mut bad = session.clone();
        if value.is_null() {
            bad.as_object_mut().unwrap().remove(field);
        } else {
            bad[field] = value;
        }
        let r = app.webhook(bad).await;
        assert_eq!((r.status, r.code()), (422, code), "{field}: {}", r.body);
    }

    let dispute = json!({
        "event_id": "evt_dispute_1",
        "type": "charge.disputed",
        "order_id": "ord_nope",
        "payment_id": "pay_nope",
        "amount": 700,
        "currency": "USD",
    });
    let mut bad = dispute.clone();
    bad["amount"] = json!(-1);
    let r = app.webhook(bad).await;
    assert_eq!((r.status, r.code()), (422, "invalid_amount"), "{}", r.body);
    assert_eq!(app.count("disputes").await, 0);
    let r = app.webhook(dispute.clone()).await;
    assert_eq!(r.body["status"], "dispute_recorded", "{}", r.body);
    let r = app.webhook(dispute).await;
    assert_eq!(r.body["status"], "duplicate", "{}", r.body);
    assert_eq!(app.count("disputes").await, 1);
    assert!(app.engine.calls().is_empty(), "{:?}", app.engine.calls());
}

/// Partial refunds and returns check their input before anything is recorded: a clear 4xx
/// with its code, and no refund or return row.
#[tokio::test]
async fn partial_refunds_and_returns_refuse_bad_input_and_record_nothing() {
    let app = fast_app().await;
    shop(&app).await;
    let order = placed(&app, "alice", "k-refunds").await;
    let refunds = format!("/v1/admin/orders/{order}/refunds");
    for (body, status, code) in [
        (
            json!({"amount": 100, "reason": "goodwill"}),
            409,
            "order_not_refundable",
        ),
        (json!({"reason": "goodwill"}), 422, "invalid_refund"),
        (
            json!({"amount": 100, "lines": [{"sku": "book", "quantity": 1}], "reason": "goodwill"}),
            422,
            "invalid_refund",
        ),
        (
            json!({"amount": 100, "reason": "because"}),
            422,
            "invalid_reason",
        ),
        (
            json!({"amount": 0, "reason": "goodwill"}),
            422,
            "invalid_amount",
        ),
        (
            json!({"lines": [], "reason": "damaged"}),
            422,
            "invalid_items",
        ),
        (
            json!({"lines": [{"sku": "book", "quantity": 1}, {"sku": "book", "quantity": 1}], "reason": "damaged"}),
            422,
            "duplicate_sku",
        ),
        (
            json!({"lines": [{"sku": "book", "quantity": 0}], "reason": "damaged"}),
            422,
            "invalid_quantity",
        ),
        (json!({"amount": 100}), 422, "invalid_body"),
    ] {
        let r = app
            .call(Who::Admin, "POST", &refunds, Some(body.clone()))
            .await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.body);
        assert_error_shape(&r, &body.to_string());
    }
    let r = app
        .call(
            Who::Admin,
            "POST",
            "/v1/admin/orders/ord_missing/refunds",
            Some(json!({"amount": 100, "reason": "goodwill"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"), "{}", r.body);

    let returns = format!("/v1/orders/{order}/returns");
    let line = json!({"lines": [{"sku": "book", "quantity": 1}], "reason": "damaged"});
    let r = app
        .call(Who::User("alice"), "POST", &returns, Some(line.clone()))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "order_not_returnable"),
        "{}",
        r.body
    );
    let r = app
        .call(Who::User("bob"), "POST", &returns, Some(line))
        .await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"), "{}", r.body);
    for id in ["ret_nope", "rf_nope"] {
        let r = app
            .call(
                Who::Admin,
                "POST",
                &format!("/v1/admin/returns/{id}/receive"),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "return_not_found"),
            "{}",
            r.body
        );
    }
    let listed = app
        .call(
            Who::User("alice"),
            "GET",
            &refunds.replace("/admin", ""),
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["refunds"], json!([]));
    assert_eq!(app.count("order_refunds").await, 0);
    assert_eq!(app.count("order_returns").await, 0);
}
