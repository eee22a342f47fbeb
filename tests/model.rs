//! The store against a model (issue 11): proptest runs random sequences of the activities that
//! move stock and money (reserve, record, pay, cancel, cancel after payment, reject, refund,
//! partial refund)
//! over four orders that share SKUs, coupons, wallets and points accounts. The sequences repeat,
//! reorder and interleave calls the way retries and races deliver them. After every step the
//! database must equal a simple model exactly: every hold's state, every balance, every
//! order's status, every payment and refund. A call the model says must not take effect may
//! answer an error or a no-op, but must change nothing. Each case ends by settling every order
//! and running the conservation check of DESIGN.md section 3 (`audit::check`).
//!
//! `MODEL_CASES` sets the number of cases: 10,000 by default on SQLite, 1,000 on PostgreSQL.
//! A failing case is shrunk, and proptest saves its seed in `tests/model.proptest-regressions`, which is
//! replayed first on every later run.

mod common;

use orderflow_activities::funds::{POINTS, WALLET};
use orderflow_activities::order_refunds::{self, Split};
use orderflow_activities::{audit, coupons, funds, orders, outcome, payments, stock};
use orderflow_store::{self as store, Db};
use orderflow_workflows::model::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use std::collections::BTreeMap;

const ORDERS: usize = 4;
const USERS: usize = 2;
const STOCK: i64 = 3;
const PRICE: i64 = 300;
const COUPON: i64 = 120;
const MAX_DISCOUNT: i64 = 80;
const CREDIT: i64 = 150;
const POINTS_USED: i64 = 60;
const WALLET_USED: i64 = 70;

/// One call, as the workflow (or a retry of it, or a late duplicate) makes it.
#[derive(Debug, Clone, Copy)]
enum Op {
    Reserve(usize, Resource),
    /// The order recorded `pending_payment` (sent only once every hold is reserved, as the
    /// workflow does, or again as a duplicate).
    Record(usize),
    /// Paid by payment `n` of the order: status, payment and every capture.
    Pay(usize, usize),
    /// Cancelled before payment: every release.
    Cancel(usize),
    /// Cancelled after payment: every return, the payment owed back.
    CancelPaid(usize),
    /// Refused before it was recorded: every release, then the `rejected` row (sent only
    /// before the order was recorded pending, as the workflow does).
    Reject(usize),
    /// Payment `n` of the order refunded: the refund begun, then its success recorded.
    Refund(usize, usize),
    /// A partial refund of this value asked for (its id is the order and the value: the same
    /// op again is a replay), then its success recorded.
    PartialRefund(usize, i64),
    /// Shorthand for every reservation of the order, then its record, one call after the
    /// other (so that paid orders, and what follows payment, are common in the cases).
    Place(usize),
}

impl Op {
    /// The calls this op stands for.
    fn calls(self) -> Vec<Op> {
        match self {
            Op::Place(k) => Resource::ALL
                .iter()
                .map(|r| Op::Reserve(k, *r))
                .chain([Op::Record(k)])
                .collect(),
            other => vec![other],
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..ORDERS;
    let resource = prop_oneof![
        Just(Resource::Stock),
        Just(Resource::Coupon),
        Just(Resource::Points),
        Just(Resource::Wallet)
    ];
    prop_oneof![
        4 => (k.clone(), resource).prop_map(|(k, r)| Op::Reserve(k, r)),
        2 => k.clone().prop_map(Op::Record),
        2 => k.clone().prop_map(Op::Place),
        3 => (k.clone(), 0..2usize).prop_map(|(k, n)| Op::Pay(k, n)),
        1 => k.clone().prop_map(Op::Cancel),
        1 => k.clone().prop_map(Op::CancelPaid),
        1 => k.clone().prop_map(Op::Reject),
        1 => (k.clone(), 0..2usize).prop_map(|(k, n)| Op::Refund(k, n)),
        2 => (k, prop_oneof![Just(1i64), Just(45), Just(150), Just(PRICE)])
            .prop_map(|(k, v)| Op::PartialRefund(k, v)),
    ]
}

fn user(k: usize) -> String {
    format!("u{}", k % USERS)
}
fn sku(k: usize) -> String {
    format!("sku{}", k % 2)
}
fn order_id(k: usize) -> String {
    format!("ord_m{k}")
}
fn payment_id(k: usize, n: usize) -> String {
    format!("pay_m{k}_{n}")
}

/// How much of its row a hold takes: a stock hold's amount is the line's price, and each
/// order here takes one unit.
fn units(r: Resource, amount: i64) -> i64 {
    if r == Resource::Stock { 1 } else { amount }
}

/// What the database must hold, computed without it.
#[derive(Debug, Clone, Default)]
struct Model {
    /// (order, resource) -> (state, amount held).
    holds: BTreeMap<(usize, Resource), (&'static str, i64)>,
    status: BTreeMap<usize, &'static str>,
    /// Payment id -> `captured` or `unapplied`.
    payments: BTreeMap<String, &'static str>,
    refunded: BTreeMap<String, i64>,
    /// Partial refunds, by refund id: (order, value, split).
    partial: BTreeMap<String, (usize, i64, Split)>,
    coupons: Vec<String>,
}

impl Model {
    /// What succeeded partial refunds gave back of an order's hold.
    fn given(&self, k: usize, r: Resource) -> i64 {
        self.partial
            .values()
            .filter(|(j, _, _)| *j == k)
            .map(|(_, _, s)| match r {
                Resource::Wallet => s.wallet,
                Resource::Points => s.points,
                Resource::Coupon => s.coupon,
                Resource::Stock => 0,
            })
            .sum()
    }
    fn hold(&self, k: usize, r: Resource) -> Option<&'static str> {
        self.holds.get(&(k, r)).map(|h| h.0)
    }
    fn amount(&self, k: usize, r: Resource) -> i64 {
        self.holds.get(&(k, r)).map_or(0, |h| h.1)
    }
    /// What is left of a resource for a new reservation.
    fn left(&self, k: usize, r: Resource) -> i64 {
        let same = |j: usize| match r {
            Resource::Stock => sku(j) == sku(k),
            _ => user(j) == user(k),
        };
        let taken: i64 = self
            .holds
            .iter()
            .filter(|((j, rr), (state, _))| {
                *rr == r && same(*j) && matches!(*state, "reserved" | "captured")
            })
            .map(|((j, rr), (_, amount))| units(*rr, *amount) - self.given(*j, *rr))
            .sum();
        let total = match r {
            Resource::Stock => STOCK,
            Resource::Coupon => COUPON,
            Resource::Points | Resource::Wallet => CREDIT,
        };
        total - taken
    }
    fn payable(&self, k: usize) -> i64 {
        PRICE
            - self.amount(k, Resource::Coupon)
            - self.amount(k, Resource::Points)
            - self.amount(k, Resource::Wallet)
    }
    fn all_reserved(&self, k: usize) -> bool {
        Resource::ALL
            .iter()
            .all(|r| self.hold(k, *r) == Some("reserved"))
    }
    fn move_all(&mut self, k: usize, from: &str, to: &'static str) {
        for r in Resource::ALL {
            if let Some(h) = self.holds.get_mut(&(k, r))
                && h.0 == from
            {
                h.0 = to;
            }
        }
    }
    fn release_all(&mut self, k: usize) {
        self.move_all(k, "reserved", "released");
        for r in Resource::ALL {
            self.holds.entry((k, r)).or_insert(("released", 0));
        }
    }
    fn paid_with(&self, k: usize) -> Option<String> {
        (0..2)
            .map(|n| payment_id(k, n))
            .find(|p| self.payments.get(p) == Some(&"captured"))
    }
}

/// Whether the test sends `op` at all in this state: the workflow's own ordering (a record
/// follows the reservations; a rejection comes before any record). Everything else is sent.
fn sent(m: &Model, op: Op) -> bool {
    match op {
        Op::Record(k) => match m.status.get(&k) {
            None => m.all_reserved(k),
            Some(s) => *s == "pending_payment",
        },
        Op::Reject(k) => matches!(m.status.get(&k), None | Some(&"rejected")),
        _ => true,
    }
}

/// What `op` must do to the model.
fn apply(m: &mut Model, op: Op) {
    match op {
        Op::Place(_) => unreachable!("expanded into its calls before it is applied"),
        Op::Reserve(k, r) => {
            if m.hold(k, r).is_none() {
                let want = match r {
                    Resource::Stock => 1,
                    Resource::Coupon => MAX_DISCOUNT,
                    Resource::Points => POINTS_USED,
                    Resource::Wallet => WALLET_USED,
                };
                let left = m.left(k, r);
                let take = match r {
                    Resource::Coupon => want.min(left),
                    _ if left >= want => want,
                    _ => 0,
                };
                if take > 0 {
                    let amount = if r == Resource::Stock { PRICE } else { take };
                    m.holds.insert((k, r), ("reserved", amount));
                }
            }
        }
        Op::Record(k) => {
            m.status.entry(k).or_insert("pending_payment");
        }
        Op::Pay(k, n) => {
            let p = payment_id(k, n);
            if m.status.get(&k) == Some(&"pending_payment") && !m.payments.contains_key(&p) {
                m.status.insert(k, "paid");
                m.move_all(k, "reserved", "captured");
                m.payments.insert(p, "captured");
            }
        }
        Op::Cancel(k) => {
            if m.status.get(&k) == Some(&"pending_payment") {
                m.status.insert(k, "cancelled");
                m.release_all(k);
            }
        }
        Op::CancelPaid(k) => {
            // An order with partial refunds is not undone whole (it would give back twice).
            let partly = m.partial.values().any(|(j, _, _)| *j == k);
            if m.status.get(&k) == Some(&"paid") && !partly {
                m.status.insert(k, "cancelled");
                m.move_all(k, "captured", "returned");
                let p = m.paid_with(k).expect("a paid order has its payment");
                m.payments.insert(p, "unapplied");
            }
        }
        Op::Reject(k) => {
            if !m.status.contains_key(&k) {
                m.release_all(k);
                m.status.insert(k, "rejected");
            }
        }
        Op::Refund(k, n) => {
            let p = payment_id(k, n);
            if m.payments.get(&p) != Some(&"captured") && !m.refunded.contains_key(&p) {
                m.payments.insert(p.clone(), "unapplied");
                m.refunded.insert(p, m.payable(k));
            }
        }
        Op::PartialRefund(k, value) => {
            let id = partial_refund_id(k, value);
            if m.status.get(&k) == Some(&"paid") && !m.partial.contains_key(&id) {
                let paid = Split {
                    payment: m.payable(k),
                    wallet: m.amount(k, Resource::Wallet),
                    points: m.amount(k, Resource::Points),
                    coupon: m.amount(k, Resource::Coupon),
                };
                let given = m
                    .partial
                    .values()
                    .filter(|(j, _, _)| *j == k)
                    .fold(Split::default(), |sum, (_, _, s)| sum.plus(*s));
                let left = paid.minus(given);
                if let Some(split) = order_refunds::split(value, left) {
                    m.partial.insert(id, (k, value, split));
                }
            }
        }
    }
}

fn partial_refund_id(k: usize, value: i64) -> String {
    format!("rf_m{k}_{value}")
}

/// The database end of a test case.
struct Store {
    db: Db,
    rt: tokio::runtime::Runtime,
}

impl Store {
    async fn reset(&self) -> Vec<String> {
        let tables: Vec<String> = if database_url().starts_with("postgres") {
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_sqlx%'")
                .fetch_all(&self.db)
                .await
                .unwrap()
        } else {
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
                .fetch_all(&self.db)
                .await
                .unwrap()
        };
        let mut tx = self.db.begin().await.unwrap();
        for t in tables {
            sqlx::query(&format!("DELETE FROM {t}"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        for s in 0..2 {
            let spec = store::SkuSpec {
                price: PRICE,
                stock: STOCK,
                kind: "physical".into(),
                quota: None,
            };
            store::put_sku(&self.db, &format!("sku{s}"), &spec)
                .await
                .unwrap();
        }
        let mut coupons = Vec::new();
        for u in 0..USERS {
            let u = format!("u{u}");
            store::credit(&self.db, WALLET, &u, CREDIT).await.unwrap();
            store::credit(&self.db, POINTS, &u, CREDIT).await.unwrap();
            let c = store::create_coupon(&self.db, &u, "amount", COUPON)
                .await
                .unwrap();
            coupons.push(c.coupon_id);
        }
        coupons
    }

    fn place(&self, m: &Model, k: usize, status: OrderStatus) -> RecordOrder {
        RecordOrder {
            order: PlaceOrder {
                order_id: order_id(k),
                user_id: user(k),
                items: vec![OrderLine {
                    sku: sku(k),
                    quantity: 1,
                }],
                coupon_id: Some(m.coupons[k % USERS].clone()),
                points: POINTS_USED,
                wallet_amount: WALLET_USED,
                payment_timeout_secs: 60,
                currency: "USD".into(),
                request_hash: format!("h{k}"),
                idempotency_key: format!("k{k}"),
                checkout_window_secs: None,
                late_payment_grace_secs: None,
                payment_method: PaymentMethod::Online,
                max_open_orders: None,
                resume: false,
                capture: None,
            },
            status,
            amounts: Amounts {
                total: PRICE,
                coupon: m.amount(k, Resource::Coupon),
                points: m.amount(k, Resource::Points),
                wallet: m.amount(k, Resource::Wallet),
                payable: m.payable(k),
            },
            expires_at_ms: (status == OrderStatus::PendingPayment).then_some(i64::MAX / 2),
            rejection: (status == OrderStatus::Rejected)
                .then(|| Refusal::new("insufficient_stock", "model")),
            at_ms: 1,
        }
    }

    fn payment(&self, m: &Model, k: usize, n: usize) -> PaymentReceived {
        PaymentReceived {
            payment_id: payment_id(k, n),
            event_id: format!("evt_{k}_{n}"),
            amount: m.payable(k),
            currency: "USD".into(),
            capture_before_ms: None,
        }
    }

    /// Sends `op`; its answer is not judged here (a call the model refuses may answer an
    /// error), only what it leaves in the database.
    async fn send(&self, m: &Model, op: Op) {
        let db = &self.db;
        let all = Resource::ALL.to_vec();
        let _ = match op {
            Op::Place(_) => unreachable!("expanded into its calls before it is sent"),
            Op::Reserve(k, r) => {
                let (o, u) = (order_id(k), user(k));
                match r {
                    Resource::Stock => stock::reserve(
                        db,
                        &ReserveStock {
                            order_id: o,
                            items: vec![OrderLine {
                                sku: sku(k),
                                quantity: 1,
                            }],
                            user_id: u,
                            max_open_orders: None,
                        },
                    )
                    .await
                    .map(drop),
                    Resource::Coupon => coupons::reserve(
                        db,
                        &ReserveCoupon {
                            order_id: o,
                            user_id: u,
                            coupon_id: m.coupons[k % USERS].clone(),
                            max_discount: MAX_DISCOUNT,
                        },
                    )
                    .await
                    .map(drop),
                    Resource::Points | Resource::Wallet => {
                        let (account, amount) = match r {
                            Resource::Points => (POINTS, POINTS_USED),
                            _ => (WALLET, WALLET_USED),
                        };
                        let input = ReserveFunds {
                            order_id: o,
                            user_id: u,
                            amount,
                        };
                        funds::reserve(db, account, &input).await.map(drop)
                    }
                }
            }
            Op::Record(k) => {
                orders::record(db, &self.place(m, k, OrderStatus::PendingPayment)).await
            }
            Op::Pay(k, n) => {
                let paid = MarkPaid {
                    order_id: order_id(k),
                    payment: Some(self.payment(m, k, n)),
                    at_ms: 2,
                };
                outcome::pay(db, &PayOrder { paid, held: all }).await
            }
            Op::Cancel(k) => {
                let input = CancelOrder::new(order_id(k), CancelReason::User, 3, &all);
                outcome::cancel(db, &input).await
            }
            Op::CancelPaid(k) => {
                let input = CancelOrder::new(order_id(k), CancelReason::Admin, 4, &all);
                outcome::cancel_paid(db, &input).await
            }
            Op::Reject(k) => {
                let release = SettleHolds {
                    order_id: order_id(k),
                    held: all,
                    how: Move::Release,
                };
                match outcome::settle_holds(db, &release).await {
                    Ok(()) => orders::record(db, &self.place(m, k, OrderStatus::Rejected)).await,
                    Err(e) => Err(e),
                }
            }
            Op::Refund(k, n) => {
                let input = RefundPayment {
                    order_id: order_id(k),
                    user_id: user(k),
                    payment: self.payment(m, k, n),
                    reason: "model".into(),
                    requested_at_ms: 5,
                    idempotency_key: None,
                };
                match payments::begin_refund(db, &input, None).await {
                    Ok(RefundBegun::Call { .. }) => {
                        let result = RecordRefundResult {
                            order_id: order_id(k),
                            payment_id: payment_id(k, n),
                            outcome: RefundOutcome::Succeeded {
                                provider_refund_id: format!("re_{k}_{n}"),
                                voided: false,
                            },
                            at_ms: 6,
                        };
                        payments::record_refund_result(db, &result).await
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Op::PartialRefund(k, value) => {
                let new = order_refunds::NewRefund {
                    refund_id: partial_refund_id(k, value),
                    order_id: order_id(k),
                    amount: Some(value),
                    lines: Vec::new(),
                    reason: "goodwill".into(),
                    requested_by: "admin".into(),
                    request_hash: format!("v{value}"),
                    at: 7,
                };
                match order_refunds::request(db, &new).await {
                    Ok((refund, _)) => {
                        let outcome =
                            (refund.split.payment > 0).then(|| RefundOutcome::Succeeded {
                                provider_refund_id: format!("re_{}", refund.refund_id),
                                voided: false,
                            });
                        let result = RecordOrderRefund {
                            refund_id: refund.refund_id,
                            order_id: order_id(k),
                            outcome,
                            at_ms: 8,
                        };
                        order_refunds::finish(db, &result).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
    }

    /// The database as the model describes it.
    async fn snapshot(&self) -> Snapshot {
        // One connection for every read: a snapshot per step is most of the test's queries.
        let mut conn = self.db.acquire().await.unwrap();
        let c = &mut *conn;
        let mut rows = Vec::new();
        for sql in [
            "SELECT sku, available, reserved, sold FROM skus ORDER BY sku",
            "SELECT coupon_id, balance, reserved, used FROM coupons ORDER BY coupon_id",
            "SELECT user_id, balance, frozen, spent FROM wallets ORDER BY user_id",
            "SELECT user_id, balance, reserved, spent FROM points_accounts ORDER BY user_id",
        ] {
            rows.push(
                sqlx::query_as::<_, (String, i64, i64, i64)>(sql)
                    .fetch_all(&mut *c)
                    .await
                    .unwrap(),
            );
        }
        let [skus, coupons, wallets, points] = rows.try_into().unwrap();
        Snapshot {
            skus,
            coupons,
            wallets,
            points,
            holds: sqlx::query_as(
                "SELECT order_id, resource, state, amount, returned_amount FROM holds ORDER BY order_id, resource",
            )
            .fetch_all(&mut *c)
            .await
            .unwrap(),
            orders: sqlx::query_as("SELECT order_id, status FROM orders ORDER BY order_id")
                .fetch_all(&mut *c)
                .await
                .unwrap(),
            payments: sqlx::query_as("SELECT payment_id, status FROM payments ORDER BY payment_id")
                .fetch_all(&mut *c)
                .await
                .unwrap(),
            refunds: sqlx::query_as(
                "SELECT payment_id, status, amount FROM refunds ORDER BY payment_id",
            )
            .fetch_all(&mut *c)
            .await
            .unwrap(),
            partial: sqlx::query_as(
                "SELECT refund_id, status, value, payment_amount, wallet_amount, points_amount, coupon_amount
                 FROM order_refunds ORDER BY refund_id",
            )
            .fetch_all(&mut *c)
            .await
            .unwrap(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    skus: Vec<(String, i64, i64, i64)>,
    coupons: Vec<(String, i64, i64, i64)>,
    wallets: Vec<(String, i64, i64, i64)>,
    points: Vec<(String, i64, i64, i64)>,
    holds: Vec<(String, String, String, i64, i64)>,
    orders: Vec<(String, String)>,
    payments: Vec<(String, String)>,
    refunds: Vec<(String, String, i64)>,
    partial: Vec<(String, String, i64, i64, i64, i64, i64)>,
}

/// What the model says the database holds.
fn expected(m: &Model) -> Snapshot {
    // (held, captured) per resource row, from the model's holds.
    let sums = |r: Resource, subject: &dyn Fn(usize) -> String, of: &str| {
        let (mut held, mut captured) = (0, 0);
        for ((k, rr), (state, amount)) in &m.holds {
            if *rr == r && subject(*k) == of {
                match *state {
                    "reserved" => held += units(r, *amount),
                    "captured" => captured += units(r, *amount) - m.given(*k, r),
                    _ => {}
                }
            }
        }
        (held, captured)
    };
    let row = |r: Resource, subject: &dyn Fn(usize) -> String, of: String, total: i64| {
        let (held, captured) = sums(r, subject, &of);
        (of, total - held - captured, held, captured)
    };
    let by_user = |k: usize| user(k);
    let by_coupon = |k: usize| m.coupons[k % USERS].clone();
    let mut coupons: Vec<_> = (0..USERS)
        .map(|u| row(Resource::Coupon, &by_coupon, m.coupons[u].clone(), COUPON))
        .collect();
    coupons.sort();
    Snapshot {
        skus: (0..2)
            .map(|s| row(Resource::Stock, &sku, format!("sku{s}"), STOCK))
            .collect(),
        coupons,
        wallets: (0..USERS)
            .map(|u| row(Resource::Wallet, &by_user, format!("u{u}"), CREDIT))
            .collect(),
        points: (0..USERS)
            .map(|u| row(Resource::Points, &by_user, format!("u{u}"), CREDIT))
            .collect(),
        holds: {
            let mut holds: Vec<_> = m
                .holds
                .iter()
                .map(|((k, r), (state, amount))| {
                    (
                        order_id(*k),
                        r.as_str().to_owned(),
                        state.to_string(),
                        *amount,
                        m.given(*k, *r),
                    )
                })
                .collect();
            holds.sort();
            holds
        },
        orders: m
            .status
            .iter()
            .map(|(k, s)| (order_id(*k), s.to_string()))
            .collect(),
        payments: m
            .payments
            .iter()
            .map(|(p, s)| (p.clone(), s.to_string()))
            .collect(),
        refunds: m
            .refunded
            .iter()
            .map(|(p, amount)| (p.clone(), "succeeded".to_owned(), *amount))
            .collect(),
        partial: m
            .partial
            .iter()
            .map(|(id, (_, value, s))| {
                let status = "succeeded".to_owned();
                (
                    id.clone(),
                    status,
                    *value,
                    s.payment,
                    s.wallet,
                    s.points,
                    s.coupon,
                )
            })
            .collect(),
    }
}

/// PostgreSQL under `TEST_DATABASE_URL`; else SQLite in a file on tmpfs when there is one (the
/// cases are many and small, and durability is not what they test).
fn database_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        if std::env::var("TEST_DATABASE_URL").is_err_and(|_| shm.is_dir()) {
            let file = shm.join(format!(
                "orderflow-model-{}.db",
                uuid::Uuid::new_v4().simple()
            ));
            return format!("sqlite://{}", file.display());
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(common::fresh_database_url())
    })
    .clone()
}

fn cases() -> u32 {
    let on_postgres = database_url().starts_with("postgres");
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if on_postgres { 1_000 } else { 10_000 })
}

/// Calls that changed the model, and calls the model said must change nothing.
static EFFECT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static NO_EFFECT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Partial refunds that took effect (the rarest op: its order must be paid first).
static PARTIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs one case: every sent op, the snapshot against the model after each, then everything
/// settled and the conservation check.
fn run_case(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    store.rt.block_on(async {
        let mut m = Model {
            coupons: store.reset().await,
            ..Model::default()
        };
        let mut settle: Vec<Op> = Vec::new();
        for k in 0..ORDERS {
            settle.push(Op::Reject(k));
            settle.push(Op::Cancel(k));
        }
        let calls: Vec<Op> = ops.iter().flat_map(|op| op.calls()).collect();
        for (i, op) in calls.iter().chain(&settle).enumerate() {
            if !sent(&m, *op) {
                continue;
            }
            store.send(&m, *op).await;
            let before = format!("{m:?}");
            apply(&mut m, *op);
            let counter = if format!("{m:?}") == before {
                &NO_EFFECT
            } else {
                &EFFECT
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if matches!(op, Op::PartialRefund(..)) && std::ptr::eq(counter, &EFFECT) {
                PARTIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let (got, want) = (store.snapshot().await, expected(&m));
            prop_assert_eq!(got, want, "after step {} ({:?})", i, op);
        }
        let bad = audit::check(&store.db).await.unwrap();
        prop_assert!(bad.is_empty(), "conservation: {:?}", bad);
        Ok(())
    })
}

/// Runs `cases` cases on its own database (a suffix of the test's one).
fn run_cases(suffix: usize, cases: u32) -> Result<(), String> {
    let url = database_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = match url.strip_suffix(".db") {
        Some(stem) => format!("{stem}-{suffix}.db"),
        None if suffix == 0 => url,
        None => rt.block_on(common::fresh_database_url()),
    };
    let db = rt.block_on(orderflow::run::open_db(&url, true)).unwrap();
    let store = Store { db, rt };
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&proptest::collection::vec(op(), 1..24), |ops| {
            run_case(&store, &ops)
        })
        .map_err(|e| e.to_string())
}

/// The cases run on two threads (two databases): one per core.
#[test]
fn the_store_matches_the_model_under_any_order_of_calls() {
    let started = std::time::Instant::now();
    let total = cases();
    let halves = [total / 2, total - total / 2];
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = halves
            .iter()
            .enumerate()
            .map(|(i, n)| scope.spawn(move || run_cases(i, *n)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for r in results {
        if let Err(e) = r {
            panic!("{e}");
        }
    }
    println!(
        "model: {total} cases of up to 23 ops (a placement is 5 calls) over {ORDERS} orders: {} calls took effect ({} partial refunds), {} changed nothing, as the model said after every step; {:.0} s",
        EFFECT.load(std::sync::atomic::Ordering::Relaxed),
        PARTIAL.load(std::sync::atomic::Ordering::Relaxed),
        NO_EFFECT.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
