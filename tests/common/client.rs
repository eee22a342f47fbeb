//! Requests to the API as a named caller, and the domain helpers built on them.
//!
//! Nothing is sent with a token the test did not name: `as_user("alice")` carries Alice's,
//! `as_admin()` the admin's, `anonymous()` none, and `TestApp::send` sends a request exactly
//! as it was built. Helpers act as whoever would in a shop: an order's buyer for the order
//! (`order`, `cancel`, `checkout`), the admin for the catalogue and accounts (`put_sku`,
//! `credit_wallet`, `create_coupon`).

use super::*;
use orderflow_provider::WebhookEvent;
use serde_json::{Value, json};

/// An HTTP answer: status and JSON body (or `null`).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A token for `user` (role `user`), signed with the test secret.
pub fn user_token(user: &str) -> String {
    orderflow_api::auth::mint(JWT_SECRET, user, orderflow_api::auth::Role::User, 3600)
}

/// An admin token, for requests the test sends `as_admin()`.
pub fn admin_token() -> String {
    orderflow_api::auth::mint(JWT_SECRET, "ops", orderflow_api::auth::Role::Admin, 3600)
}

/// A caller of the API: a user, the admin, or nobody.
#[derive(Clone)]
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Caller<'_> {
    /// Sends `req` with this caller's token (if any).
    pub async fn send(self, req: reqwest::RequestBuilder) -> Reply {
        let req = match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        self.app.send(req).await
    }
    /// `method path` on this test's API, not sent yet.
    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        self.app
            .http
            .request(method, format!("{}{path}", self.app.base))
    }
    pub async fn get(self, path: &str) -> Reply {
        let req = self.request("GET", path);
        self.send(req).await
    }
    pub async fn post(self, path: &str, body: Value) -> Reply {
        let req = self.request("POST", path).json(&body);
        self.send(req).await
    }
    pub async fn put(self, path: &str, body: Value) -> Reply {
        let req = self.request("PUT", path).json(&body);
        self.send(req).await
    }
    /// `POST path` with an idempotency key, as order creation takes it.
    pub async fn post_keyed(self, path: &str, key: &str, body: Value) -> Reply {
        let req = self
            .request("POST", path)
            .header("Idempotency-Key", key)
            .json(&body);
        self.send(req).await
    }
    /// `POST /v1/orders` with an idempotency key.
    pub async fn create_order(self, key: &str, body: Value) -> Reply {
        self.post_keyed("/v1/orders", key, body).await
    }
    /// `method path`, with a JSON body (and an idempotency key) when given: for tables of
    /// routes.
    pub async fn call(self, method: &str, path: &str, body: Option<Value>) -> Reply {
        match body {
            Some(body) => {
                let req = self
                    .request(method, path)
                    .header("Idempotency-Key", "call")
                    .json(&body);
                self.send(req).await
            }
            None => {
                let req = self.request(method, path);
                self.send(req).await
            }
        }
    }
}

impl TestApp {
    /// Requests with `token` (any string, forged or expired ones too), or none.
    pub fn with_token(&self, token: Option<&str>) -> Caller<'_> {
        Caller {
            app: self,
            token: token.map(str::to_owned),
        }
    }
    /// Requests as `user` (role `user`).
    pub fn as_user(&self, user: &str) -> Caller<'_> {
        self.with_token(Some(&user_token(user)))
    }
    /// Requests as the admin.
    pub fn as_admin(&self) -> Caller<'_> {
        self.with_token(Some(&admin_token()))
    }
    /// Requests with no token.
    pub fn anonymous(&self) -> Caller<'_> {
        self.with_token(None)
    }
    /// Requests as the user who placed `order_id` (read from the database; a caller with no
    /// order is nobody's, and gets the API's 404).
    ///
    /// A read cut off by a database fault (the outage tests cut connections) is retried for up
    /// to 30 s.
    pub async fn buyer_of(&self, order_id: &str) -> Caller<'_> {
        let mut tries = 0;
        let user: Option<String> = loop {
            let read = sqlx::query_scalar("SELECT user_id FROM orders WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.db)
                .await;
            match read {
                Ok(user) => break user,
                Err(_) if tries < 150 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("read the buyer of {order_id}: {e}"),
            }
        };
        self.as_user(&user.unwrap_or_else(|| "nobody".to_owned()))
    }

    /// Sends `req` exactly as built: no token is added.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = self
            .http
            .execute(req.build().expect("a request"))
            .await
            .expect("HTTP request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// `POST /v1/orders` as the user the body names (`user_id`); a body that names nobody
    /// goes through `as_admin()` or `as_user()` in the test itself.
    pub async fn create_order(&self, key: &str, body: Value) -> Reply {
        let user = body["user_id"]
            .as_str()
            .filter(|u| !u.is_empty())
            .expect("the order body names its user (or the test names the caller)")
            .to_owned();
        self.as_user(&user).create_order(key, body).await
    }

    /// A digital SKU: paid orders of it are fulfilled at once (an entitlement).
    pub async fn put_sku(&self, sku: &str, price: i64, stock: i64) {
        self.put_sku_with(
            sku,
            json!({"price": price, "stock": stock, "kind": "digital"}),
        )
        .await;
    }

    /// A SKU with any body (`kind`, `quota`).
    pub async fn put_sku_with(&self, sku: &str, body: Value) {
        let r = self
            .as_admin()
            .put(&format!("/v1/admin/skus/{sku}"), body)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    pub async fn credit_wallet(&self, user: &str, amount: i64) {
        assert_eq!(
            self.as_admin()
                .post(
                    &format!("/v1/admin/wallets/{user}/credit"),
                    json!({"amount": amount})
                )
                .await
                .status,
            200
        );
    }

    pub async fn credit_points(&self, user: &str, points: i64) {
        assert_eq!(
            self.as_admin()
                .post(
                    &format!("/v1/admin/points/{user}/credit"),
                    json!({"points": points})
                )
                .await
                .status,
            200
        );
    }

    pub async fn create_coupon(&self, user: &str, kind: &str, amount: i64) -> String {
        let r = self
            .as_admin()
            .post(
                "/v1/admin/coupons",
                json!({"user_id": user, "kind": kind, "amount": amount}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["coupon_id"].as_str().unwrap().to_owned()
    }

    pub async fn order(&self, order_id: &str) -> Value {
        let r = self
            .buyer_of(order_id)
            .await
            .get(&format!("/v1/orders/{order_id}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// The order's operation log, as its buyer reads it (`GET /v1/orders/{id}/events`).
    pub async fn events(&self, order_id: &str) -> Vec<Value> {
        let path = format!("/v1/orders/{order_id}/events");
        let r = self.buyer_of(order_id).await.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["events"].as_array().cloned().unwrap_or_default()
    }

    /// The `step` of each of the order's events, in order.
    pub async fn steps(&self, order_id: &str) -> Vec<String> {
        let events = self.events(order_id).await;
        events
            .iter()
            .map(|e| e["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Cancels `order_id` as whoever gives `reason`: the admin for `admin`, else the buyer.
    pub async fn cancel(&self, order_id: &str, reason: &str) -> Reply {
        let caller = match reason {
            "admin" => self.as_admin(),
            _ => self.buyer_of(order_id).await,
        };
        caller
            .post(
                &format!("/v1/orders/{order_id}/cancel"),
                json!({"reason": reason}),
            )
            .await
    }

    /// A payment the sandbox captured for `order_id`, as the (undelivered) webhook body.
    pub fn captured(&self, order_id: &str, amount: i64) -> WebhookEvent {
        self.sandbox.capture(order_id, amount, "USD")
    }

    /// Posts `event` as a webhook, signed now with the current secret.
    pub async fn deliver(&self, event: &WebhookEvent) -> Reply {
        self.webhook(serde_json::to_vec(event).unwrap()).await
    }

    /// `POST /v1/orders/{id}/pay`.
    pub async fn checkout(&self, order_id: &str) -> Reply {
        self.buyer_of(order_id)
            .await
            .post(&format!("/v1/orders/{order_id}/pay"), json!({}))
            .await
    }

    /// The payer pays a session at the sandbox, with an optional `Sandbox-Fault` header.
    pub async fn pay(&self, pay_url: &str, fault: Option<&str>) -> Reply {
        let mut req = self.http.post(pay_url);
        if let Some(f) = fault {
            req = req.header("Sandbox-Fault", f);
        }
        self.send(req).await
    }

    /// Checkout, then the payer pays; returns the sandbox's payment id.
    /// Ends a checkout session at the provider on its own, as ops would in its dashboard: the
    /// provider then sends `checkout.session.expired`.
    pub async fn end_session_at_provider(&self, session_id: &str) {
        let ended = self
            .http
            .post(format!(
                "{}/v1/checkout_sessions/{session_id}/expire",
                self.provider.base_url
            ))
            .bearer_auth(super::PROVIDER_KEY)
            .header("Idempotency-Key", format!("dashboard-{session_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(ended.status(), 200);
    }

    pub async fn checkout_and_pay(&self, order_id: &str, fault: Option<&str>) -> String {
        let session = self.checkout(order_id).await;
        assert_eq!(session.status, 200, "{}", session.body);
        let paid = self
            .pay(session.body["pay_url"].as_str().unwrap(), fault)
            .await;
        assert_eq!(paid.status, 200, "{}", paid.body);
        paid.body["payment_id"].as_str().unwrap().to_owned()
    }

    /// Posts a webhook with the given signature header (or none).
    pub async fn webhook_with(&self, body: Vec<u8>, signature: Option<String>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}/v1/payments/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("Payment-Signature", sig);
        }
        self.send(req).await
    }

    /// Posts a webhook signed now with the current secret.
    pub async fn webhook(&self, body: Vec<u8>) -> Reply {
        let sig = orderflow_api::signature::sign(SECRET, orderflow_store::now_ms() / 1000, &body);
        self.webhook_with(body, Some(sig)).await
    }

    pub async fn sku(&self, sku: &str) -> Value {
        self.as_admin().get(&format!("/v1/skus/{sku}")).await.body
    }

    /// Waits until the order has `status`, and returns it.
    pub async fn wait_status(&self, order_id: &str, status: &str) -> Value {
        self.eventually(30, status, || async {
            let o = self.order(order_id).await;
            (o["status"] == status).then_some(o)
        })
        .await
    }

    /// Waits until the order's shipment has `status` (a paid physical order is fulfilled in the
    /// background).
    pub async fn wait_shipment(&self, order_id: &str, status: &str) {
        self.eventually(30, "the shipment", || async {
            (self.order(order_id).await["shipment_status"] == status).then_some(())
        })
        .await
    }
}

/// Retries a request that faults may cut off (503 while the workflow or the database does not
/// answer) with the same key, as a client does, until it gets another answer (10 minutes at
/// most).
pub async fn until_answered<F, Fut>(what: &str, mut call: F) -> Reply
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let r = call().await;
        if r.status != 503 {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still 503 after 10 minutes: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
