//! The randomized scenario's steps (issue 11), for `tests/scenario.rs` and the soak: at least 200 steps drawn from a
//! printed seed (`SCENARIO_SEED` replays one, `SCENARIO_STEPS` sets the length): orders
//! created with and without coupons, points and wallet funds, paid by signed webhooks,
//! webhooks delivered twice, payments that arrive after a cancel or a deadline, cancels,
//! shipments, deadlines left to fire, and refunds the provider answers late or refuses for a
//! while. Steps run six at a time, so that they interleave; the seed fixes the steps, not
//! their timing.
//!
//! Every answer must be a success or one of the step's documented refusals (never a 5xx other
//! than a 503 that is retried). At the end every order is driven to its end (pending ones
//! cancelled, paid physical ones shipped), every workflow must finish, and the two-way audit
//! must be clean: every captured payment applied once or refunded once, every refund meant.

use super::{Reply, TestApp, until_answered};
use orderflow_provider::WebhookEvent;
use orderflow_sandbox::{Fault, Op as ProviderOp, ScriptedFault};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Users u0..u9 place the orders.
pub const USERS: u64 = 10;
/// The price of `book` (physical) and `ebook` (digital).
pub const PRICE: i64 = 1000;

/// splitmix64: small, fast and the same everywhere, so a seed replays the same steps.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One step of the scenario, decided from the seed before its batch runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create {
        user: u64,
        physical: bool,
        coupon: bool,
        points: i64,
        wallet: i64,
        timeout: u64,
    },
    /// Pay the n-th order placed so far (modulo), by a signed webhook.
    Pay(u64),
    /// Deliver the n-th delivered webhook again, same event id.
    DuplicateWebhook(u64),
    /// Pay the n-th order again, or after it was cancelled or timed out: refunded.
    LatePay(u64),
    Cancel(u64),
    Ship(u64),
    /// An order whose 2 s deadline is left to fire.
    Timeout {
        user: u64,
    },
    /// The provider's next refunds fail for a while (503) or answer too late (after 3 s).
    RefundFault {
        late: bool,
        times: u32,
    },
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Create { .. } => "create",
            Step::Pay(_) => "pay",
            Step::DuplicateWebhook(_) => "duplicate webhook",
            Step::LatePay(_) => "late pay",
            Step::Cancel(_) => "cancel",
            Step::Ship(_) => "ship",
            Step::Timeout { .. } => "timeout",
            Step::RefundFault { .. } => "refund fault",
        }
    }

    pub fn draw(rng: &mut Rng) -> Step {
        let n = rng.next();
        match rng.below(20) {
            0..=5 => Step::Create {
                user: rng.below(USERS),
                physical: rng.below(2) == 0,
                coupon: rng.below(3) == 0,
                points: [0, 50][rng.below(2) as usize],
                wallet: [0, 70][rng.below(2) as usize],
                timeout: [3, 6, 3600, 3600][rng.below(4) as usize],
            },
            6..=9 => Step::Pay(n),
            10..=11 => Step::DuplicateWebhook(n),
            12..=13 => Step::LatePay(n),
            14..=15 => Step::Cancel(n),
            16..=17 => Step::Ship(n),
            18 => Step::Timeout {
                user: rng.below(USERS),
            },
            _ => Step::RefundFault {
                late: rng.below(2) == 0,
                times: 1 + rng.below(2) as u32,
            },
        }
    }
}

/// What the client side knows: the orders it placed and the webhooks it delivered.
#[derive(Default)]
pub struct Seen {
    pub orders: Vec<(String, bool)>,
    pub webhooks: Vec<WebhookEvent>,
    /// (step kind, status, code) -> count.
    pub answers: BTreeMap<(&'static str, u16, String), u32>,
    /// How long each webhook took to be acknowledged, in ms.
    pub webhook_ms: Vec<i64>,
}

fn nth<T: Clone>(items: &[T], n: u64) -> Option<T> {
    (!items.is_empty()).then(|| items[(n % items.len() as u64) as usize].clone())
}

/// The refusals each step may meet, by code: anything else (and any 5xx) is a bug.
pub fn allowed(kind: &str, r: &Reply) -> bool {
    if matches!(r.status, 200 | 201) {
        return true;
    }
    let code = r.code();
    match kind {
        "create" | "timeout" => {
            matches!(
                code,
                "too_many_open_orders" | "insufficient_stock" | "coupon_unusable"
            )
        }
        "cancel" => matches!(code, "order_not_cancellable" | "order_already_shipped"),
        "ship" => code == "order_not_shippable",
        _ => false,
    }
}

pub async fn payable(app: &TestApp, order_id: &str) -> i64 {
    app.order(order_id).await["payable_amount"]
        .as_i64()
        .unwrap_or(PRICE)
}

pub async fn run(app: &TestApp, step: &Step, seen: &Mutex<Seen>) {
    let pick = |n: u64| nth(&seen.lock().unwrap().orders, n);
    let kind = step.kind();
    // A timeout is a plain digital order with a 2 s deadline, left alone.
    let step = match *step {
        Step::Timeout { user } => Step::Create {
            user,
            physical: false,
            coupon: false,
            points: 0,
            wallet: 0,
            timeout: 2,
        },
        ref other => other.clone(),
    };
    let answer: Option<Reply> = match step {
        Step::Create {
            user,
            physical,
            coupon,
            points,
            wallet,
            timeout,
        } => {
            let user = format!("u{user}");
            let coupon_id = match coupon {
                true => Some(app.create_coupon(&user, "amount", 100).await),
                false => None,
            };
            let sku = if physical { "book" } else { "ebook" };
            let body = json!({"user_id": user, "items": [{"sku": sku, "quantity": 1}],
                "coupon_id": coupon_id, "points": points, "wallet_amount": wallet,
                "payment_timeout_secs": timeout});
            let key = uuid::Uuid::new_v4().to_string();
            let r = until_answered("create", || app.create_order(&key, body.clone())).await;
            if r.status == 201 {
                let id = r.body["order_id"].as_str().unwrap().to_owned();
                seen.lock().unwrap().orders.push((id, physical));
            }
            Some(r)
        }
        Step::Pay(n) | Step::LatePay(n) => match pick(n) {
            Some((order_id, _)) => {
                let event = app.captured(&order_id, payable(app, &order_id).await);
                let r = deliver_timed(app, &event, seen).await;
                seen.lock().unwrap().webhooks.push(event);
                Some(r)
            }
            None => None,
        },
        Step::DuplicateWebhook(n) => {
            // Bound first: a guard in the match would be held across the await.
            let event = nth(&seen.lock().unwrap().webhooks, n);
            match event {
                Some(event) => Some(deliver_timed(app, &event, seen).await),
                None => None,
            }
        }
        Step::Cancel(n) => match pick(n) {
            Some((order_id, _)) => {
                Some(until_answered("cancel", || app.cancel(&order_id, "user")).await)
            }
            None => None,
        },
        Step::Ship(n) => match pick(n) {
            Some((order_id, _)) => Some(until_answered("ship", || ship(app, &order_id)).await),
            None => None,
        },
        Step::Timeout { .. } => unreachable!("a timeout step runs as a create"),
        Step::RefundFault { late, times } => {
            let fault = match late {
                true => Fault {
                    timeout_after_ms: Some(3000),
                    ..Fault::default()
                },
                false => Fault {
                    status: Some(503),
                    ..Fault::default()
                },
            };
            app.sandbox.add_fault(ScriptedFault {
                op: ProviderOp::Refund,
                times,
                fault,
            });
            None
        }
    };
    if let Some(r) = answer {
        assert!(
            allowed(kind, &r),
            "{kind} ({step:?}) answered {}: {}",
            r.status,
            r.body
        );
        let key = (kind, r.status, r.code().to_owned());
        *seen.lock().unwrap().answers.entry(key).or_default() += 1;
    }
}

/// Delivers a signed webhook (retried through 503s) and records how long it took.
pub async fn deliver_timed(app: &TestApp, event: &WebhookEvent, seen: &Mutex<Seen>) -> Reply {
    let started = std::time::Instant::now();
    let r = until_answered("webhook", || app.deliver(event)).await;
    let ms = started.elapsed().as_millis() as i64;
    seen.lock().unwrap().webhook_ms.push(ms);
    r
}

pub async fn ship(app: &TestApp, order_id: &str) -> Reply {
    app.as_admin()
        .post(&format!("/v1/admin/orders/{order_id}/ship"), json!({}))
        .await
}

/// Drives every order to its end (pending ones cancelled, paid physical ones shipped), waits
/// for every workflow to finish, and counts the orders by final status.
pub async fn end_every_order(app: &TestApp, orders: &[(String, bool)]) -> BTreeMap<String, u32> {
    for (order_id, physical) in orders {
        let status = app.order(order_id).await["status"].clone();
        if status == "pending_payment" {
            let r = until_answered("cancel", || app.cancel(order_id, "user")).await;
            assert!(allowed("cancel", &r), "{order_id}: {}", r.body);
        } else if status == "paid" && *physical {
            let r = until_answered("ship", || ship(app, order_id)).await;
            assert!(allowed("ship", &r), "{order_id}: {}", r.body);
        }
    }
    let mut ended: BTreeMap<String, u32> = BTreeMap::new();
    for (order_id, _) in orders {
        let status = app
            .eventually(120, &format!("{order_id} at its end"), || async {
                let s = app.order(order_id).await["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                matches!(s.as_str(), "fulfilled" | "cancelled" | "rejected").then_some(s)
            })
            .await;
        app.settled(order_id).await;
        *ended.entry(status).or_default() += 1;
    }
    ended
}

/// The catalogue and accounts the steps use: both SKUs, and every user's wallet and points.
pub async fn stock_the_shop(app: &TestApp) {
    app.put_sku_with(
        "book",
        json!({"price": PRICE, "stock": 1_000_000, "kind": "physical"}),
    )
    .await;
    app.put_sku_with(
        "ebook",
        json!({"price": PRICE, "stock": 1_000_000, "kind": "digital"}),
    )
    .await;
    for u in 0..USERS {
        app.credit_wallet(&format!("u{u}"), 10_000_000).await;
        app.credit_points(&format!("u{u}"), 10_000_000).await;
    }
}
