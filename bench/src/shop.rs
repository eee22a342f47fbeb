//! orderflow driven the way clients drive it: over REST with user tokens, and paid by a signed
//! webhook for a payment the provider sandbox captured. Every order holds four resources:
//! stock, a coupon, points and wallet funds.
//!
//! A refusal or error is never counted as a success: [`Shop::create`] fails the run on anything
//! but a placed order, so a benchmark figure is always one of orders that did what they should.

use anyhow::{Context, bail};
use orderflow_api::auth::{Role, mint};
use orderflow_sandbox::Sandbox;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SKU: &str = "bench-item";
const PRICE: i64 = 1_000;
const COUPON_AMOUNT: i64 = 100;
const POINTS: i64 = 100;
const WALLET: i64 = 200;
/// What the provider is paid: the price less coupon, points and wallet.
pub const PAYABLE: i64 = PRICE - COUPON_AMOUNT - POINTS - WALLET;
/// Users the orders are spread over (each may have up to 10,000 open orders in the bench).
const USERS: usize = 64;

/// A placed order: its id and when its creation was answered.
pub struct Placed {
    pub order_id: String,
    pub user: usize,
}

pub struct Shop {
    http: reqwest::Client,
    base: String,
    admin: String,
    tokens: Vec<String>,
    sandbox: Sandbox,
    webhook_secret: String,
    /// Coupons made ahead, one per order: `(user, coupon_id)`.
    coupons: Mutex<Vec<(usize, String)>>,
    /// Coupons that had to be made during a measured phase (the pool ran dry).
    pub coupons_made_inline: AtomicU64,
    next: AtomicU64,
}

impl Shop {
    pub fn new(base: &str, jwt_secret: &str, webhook_secret: &str, sandbox: Sandbox) -> Shop {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client");
        Shop {
            http,
            base: base.to_owned(),
            admin: mint(jwt_secret, "bench-admin", Role::Admin, 86_400),
            tokens: (0..USERS)
                .map(|u| mint(jwt_secret, &user_name(u), Role::User, 86_400))
                .collect(),
            sandbox,
            webhook_secret: webhook_secret.to_owned(),
            coupons: Mutex::new(Vec::new()),
            coupons_made_inline: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{path}: no answer"))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, body) = self
            .call(&self.admin, method, path, Some(body), None)
            .await?;
        if status != want {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The SKU (stock for every order the run can make) and every user's wallet and points.
    pub async fn stock(&self) -> anyhow::Result<()> {
        self.admin(
            reqwest::Method::PUT,
            &format!("/v1/admin/skus/{SKU}"),
            json!({"price": PRICE, "stock": 100_000_000, "kind": "digital"}),
            200,
        )
        .await?;
        for u in 0..USERS {
            let user = user_name(u);
            self.admin(
                reqwest::Method::POST,
                &format!("/v1/admin/wallets/{user}/credit"),
                json!({"amount": 1_000_000_000}),
                200,
            )
            .await?;
            self.admin(
                reqwest::Method::POST,
                &format!("/v1/admin/points/{user}/credit"),
                json!({"points": 1_000_000_000}),
                200,
            )
            .await?;
        }
        Ok(())
    }

    async fn make_coupon(&self, user: usize) -> anyhow::Result<String> {
        let body = self
            .admin(
                reqwest::Method::POST,
                "/v1/admin/coupons",
                json!({"user_id": user_name(user), "kind": "amount", "amount": COUPON_AMOUNT}),
                201,
            )
            .await?;
        body["coupon_id"]
            .as_str()
            .map(str::to_owned)
            .context("coupon_id in the answer")
    }

    /// Makes `n` coupons ahead of a measured phase, 32 at a time.
    pub async fn make_coupons(&self, n: usize) -> anyhow::Result<()> {
        use futures::StreamExt;
        let made: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(0..n)
            .map(|i| async move {
                let user = i % USERS;
                Ok((user, self.make_coupon(user).await?))
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut pool = self.coupons.lock().unwrap();
        for c in made {
            pool.push(c?);
        }
        Ok(())
    }

    /// `POST /v1/orders` with four holds; returns the order once it is `pending_payment`.
    /// `timeout_secs` is the order's payment timeout.
    pub async fn create(&self, timeout_secs: u64) -> anyhow::Result<(Placed, Duration)> {
        let pooled = self.coupons.lock().unwrap().pop();
        let (user, coupon) = match pooled {
            Some(c) => c,
            None => {
                self.coupons_made_inline.fetch_add(1, Ordering::Relaxed);
                let user = self.next.load(Ordering::Relaxed) as usize % USERS;
                (user, self.make_coupon(user).await?)
            }
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "items": [{"sku": SKU, "quantity": 1}],
            "coupon_id": coupon,
            "points": POINTS,
            "wallet_amount": WALLET,
            "payment_timeout_secs": timeout_secs,
        });
        let key = format!("bench-{n}-{}", uuid::Uuid::new_v4().simple());
        let started = Instant::now();
        let (status, body) = self
            .call(
                &self.tokens[user],
                reqwest::Method::POST,
                "/v1/orders",
                Some(body),
                Some(&key),
            )
            .await?;
        let took = started.elapsed();
        // A create slower than the order's own deadline may come back already expired: that is
        // the truth about an overloaded stack, counted by its latency, not a harness failure.
        let expired_on_the_way = body["status"] == "cancelled"
            && body["cancel_reason"] == "timeout"
            && took >= Duration::from_secs(timeout_secs);
        if status != 201 || !(body["status"] == "pending_payment" || expired_on_the_way) {
            bail!("POST /v1/orders answered {status}: {body}");
        }
        let order_id = body["order_id"].as_str().context("order_id")?.to_owned();
        Ok((Placed { order_id, user }, took))
    }

    /// The provider captures the payable amount and its webhook is delivered, signed; returns
    /// when orderflow acknowledged it.
    pub async fn pay(&self, order: &Placed) -> anyhow::Result<()> {
        let event = self.sandbox.capture(&order.order_id, PAYABLE, "USD");
        let body = serde_json::to_vec(&event)?;
        let signature = orderflow_api::signature::sign(
            &self.webhook_secret,
            orderflow_store::now_ms() / 1000,
            &body,
        );
        let res = self
            .http
            .post(format!("{}/v1/payments/webhook", self.base))
            .header("content-type", "application/json")
            .header("Payment-Signature", signature)
            .body(body)
            .send()
            .await
            .context("the webhook: no answer")?;
        if !res.status().is_success() {
            bail!(
                "the webhook for {} answered {}",
                order.order_id,
                res.status()
            );
        }
        Ok(())
    }

    /// The order's status as its buyer reads it.
    pub async fn status(&self, order: &Placed) -> anyhow::Result<String> {
        let (code, body) = self
            .call(
                &self.tokens[order.user],
                reqwest::Method::GET,
                &format!("/v1/orders/{}", order.order_id),
                None,
                None,
            )
            .await?;
        if code != 200 {
            bail!("GET /v1/orders/{} answered {code}: {body}", order.order_id);
        }
        Ok(body["status"].as_str().unwrap_or_default().to_owned())
    }

    /// Polls every `every` until the order is paid (or fulfilled); fails after 120 s.
    pub async fn until_paid(&self, order: &Placed, every: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.status(order).await?.as_str() {
                "paid" | "fulfilled" => return Ok(()),
                "pending_payment" => {}
                other => bail!("order {} became {other} instead of paid", order.order_id),
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "order {} was not paid within 120 s of its webhook",
                    order.order_id
                );
            }
            tokio::time::sleep(every).await;
        }
    }
}

pub fn user_name(u: usize) -> String {
    format!("bench-u{u}")
}
