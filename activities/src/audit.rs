//! The conservation invariants of `docs/architecture.md` (section 3), checked against the database.
//!
//! Like Jepsen's bank test: every scenario test ends by calling [`check`], which recomputes
//! what each SKU, coupon, wallet and points account must hold from the orders' holds and
//! compares, and [`money`], the two-way audit against the provider's own ledger. `orderflow
//! audit` and `GET /v1/admin/audit` run the same two through [`run`]. They read everything into
//! memory, so they are meant for tests and audits of modest databases, and they never write.

use crate::Db;
use sqlx::Row;
use std::collections::BTreeMap;

/// Every violation found, as a readable sentence. Empty means the data is consistent.
pub async fn check(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let mut bad = Vec::new();

    // (order_id, resource, subject, amount, state, returned_amount): `returned_amount` is what
    // partial refunds gave back of a captured hold.
    let holds: Vec<(String, String, String, i64, String, i64)> = sqlx::query(
        "SELECT order_id, resource, subject, amount, state, returned_amount FROM holds ORDER BY order_id, resource",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect();
    let orders: BTreeMap<String, OrderRow> = sqlx::query(
        "SELECT order_id, status, payable_amount, expires_at, total_amount, wallet_amount,
             points_amount, coupon_amount FROM orders",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        let row = OrderRow {
            status: r.get(1),
            expires_at: r.get(3),
            total: r.get(4),
            paid: crate::order_refunds::Split {
                payment: r.get(2),
                wallet: r.get(5),
                points: r.get(6),
                coupon: r.get(7),
            },
        };
        (r.get(0), row)
    })
    .collect();
    // (order_id, sku, quantity, restocked): `restocked` is what received returns put back.
    let items: Vec<(String, String, i64, i64)> =
        sqlx::query("SELECT order_id, sku, quantity, restocked FROM order_items")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();

    // What the holds say each resource row must hold: (reserved, captured) per subject.
    let mut expect: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let stock_state: BTreeMap<&str, &str> = holds
        .iter()
        .filter(|h| h.1 == "stock")
        .map(|h| (h.0.as_str(), h.4.as_str()))
        .collect();
    for (order_id, sku, quantity, restocked) in &items {
        let slot = expect.entry(("stock".into(), sku.clone())).or_default();
        if *restocked > 0 && stock_state.get(order_id.as_str()) != Some(&"captured") {
            bad.push(format!(
                "order {order_id}: {restocked} of {sku} restocked, but its stock is not captured"
            ));
        }
        match stock_state.get(order_id.as_str()) {
            Some(&"reserved") => slot.0 += quantity,
            Some(&"captured") => slot.1 += quantity - restocked,
            Some(_) => {}
            None => bad.push(format!("order {order_id}: has items but no stock hold")),
        }
    }
    for (order_id, resource, subject, amount, state, returned) in &holds {
        if *returned > 0 && (state != "captured" || returned > amount) {
            bad.push(format!(
                "order {order_id}: {returned} of its {state} {resource} hold of {amount} given back by partial refunds"
            ));
        }
        if resource != "stock" {
            let slot = expect
                .entry((resource.clone(), subject.clone()))
                .or_default();
            match state.as_str() {
                "reserved" => slot.0 += amount,
                "captured" => slot.1 += amount - returned,
                _ => {}
            }
        }
        // Per order: the status says where every hold must be.
        let status = orders.get(order_id).map(|o| o.status.as_str());
        let allowed: &[&str] = match status {
            Some("pending_payment") => &["reserved"],
            Some("paid") | Some("fulfilled") => &["captured"],
            // Cancelled before payment: released; after payment: captured, then returned.
            Some("cancelled") => &["released", "returned"],
            Some("rejected") | None => &["released"],
            Some(_) => &[],
        };
        if !allowed.contains(&state.as_str()) {
            bad.push(format!(
                "order {order_id} ({}): its {resource} hold is {state}",
                status.unwrap_or("no order row")
            ));
        }
    }

    // Compare with the resource rows, and check each row's own conservation.
    let tables = [
        (
            "stock",
            "SELECT sku, reserved, sold, available, 0 FROM skus",
        ),
        (
            "coupon",
            "SELECT coupon_id, reserved, used, balance, amount FROM coupons",
        ),
        (
            "wallet",
            "SELECT user_id, frozen, spent, balance, credited FROM wallets",
        ),
        (
            "points",
            "SELECT user_id, reserved, spent, balance, credited FROM points_accounts",
        ),
    ];
    for (resource, sql) in tables {
        for row in sqlx::query(sql).fetch_all(db).await? {
            let (subject, held, captured, balance, total): (String, i64, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let (want_held, want_captured) = expect
                .remove(&(resource.to_owned(), subject.clone()))
                .unwrap_or((0, 0));
            if held != want_held || captured != want_captured {
                bad.push(format!(
                    "{resource} {subject}: holds {held} and has {captured} captured, but its orders say {want_held} and {want_captured}"
                ));
            }
            if balance < 0 || (resource != "stock" && balance + held + captured != total) {
                bad.push(format!("{resource} {subject}: balance {balance} + held {held} + captured {captured} != {total}"));
            }
        }
    }
    for ((resource, subject), (held, captured)) in expect {
        if held != 0 || captured != 0 {
            bad.push(format!(
                "{resource} {subject}: held by orders but the row does not exist"
            ));
        }
    }

    // Payments: a paid order has exactly one captured payment of its payable amount (none when
    // nothing was payable) and no deadline; other orders have no captured payment.
    let mut captured: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in sqlx::query("SELECT order_id, amount FROM payments WHERE status = 'captured'")
        .fetch_all(db)
        .await?
    {
        captured.entry(r.get(0)).or_default().push(r.get(1));
    }
    for (order_id, order) in &orders {
        let paid = captured.remove(order_id).unwrap_or_default();
        let payable = order.paid.payment;
        match order.status.as_str() {
            "paid" | "fulfilled" => {
                let want: Vec<i64> = if payable > 0 { vec![payable] } else { vec![] };
                if paid != want {
                    bad.push(format!(
                        "order {order_id}: paid with captured payments {paid:?}, expected {want:?}"
                    ));
                }
                if order.expires_at.is_some() {
                    bad.push(format!(
                        "order {order_id}: paid but expires_at is still set"
                    ));
                }
            }
            other if !paid.is_empty() => bad.push(format!(
                "order {order_id}: {other} but has captured payments {paid:?}"
            )),
            _ => {}
        }
    }
    for order_id in captured.keys() {
        bad.push(format!("payment captured for unknown order {order_id}"));
    }

    // Refunds: only of a payment owed back (never of the one that paid), of the same order, and
    // never more than it. At most one per payment is the table's key.
    let refunds = sqlx::query(
        "SELECT r.payment_id, r.order_id, r.amount, p.order_id, p.amount, p.status
         FROM refunds r LEFT JOIN payments p ON p.payment_id = r.payment_id",
    )
    .fetch_all(db)
    .await?;
    for r in refunds {
        let (payment_id, order_id, amount): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        let paid: Option<(String, i64, String)> = r
            .get::<Option<String>, _>(3)
            .map(|o| (o, r.get(4), r.get(5)));
        match paid {
            None => bad.push(format!(
                "refund of payment {payment_id}: no such payment is recorded"
            )),
            Some((paid_order, paid_amount, status)) => {
                if paid_order != order_id {
                    bad.push(format!("refund of payment {payment_id}: for order {order_id}, but the payment is for {paid_order}"));
                }
                if amount > paid_amount {
                    bad.push(format!(
                        "refund of payment {payment_id}: {amount} exceeds the {paid_amount} captured"
                    ));
                }
                if status != "unapplied" {
                    bad.push(format!(
                        "refund of payment {payment_id}: the payment is {status}, not owed back"
                    ));
                }
            }
        }
    }

    partial_refund_invariants(db, &orders, &holds, &items, &mut bad).await?;

    // Quotas: each user's usage is exactly the quota'd units of their open or captured orders
    // plus their active redemption entitlements.
    let mut usage: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT h.subject, i.sku, i.quota_units FROM order_items i
         JOIN holds h ON h.order_id = i.order_id AND h.resource = 'stock'
         WHERE h.state IN ('reserved', 'captured') AND i.quota_units > 0",
    )
    .fetch_all(db)
    .await?
    {
        *usage.entry((r.get(0), r.get(1))).or_default() += r.get::<i64, _>(2);
    }
    for r in sqlx::query(
        "SELECT r.user_id, e.sku, r.quota_units FROM redemptions r
         JOIN entitlements e ON e.entitlement_id = r.entitlement_id
         WHERE e.status = 'active' AND r.quota_units > 0",
    )
    .fetch_all(db)
    .await?
    {
        *usage.entry((r.get(0), r.get(1))).or_default() += r.get::<i64, _>(2);
    }
    // (An admin may lower a quota below what users already hold: that is not a violation.)
    for r in sqlx::query("SELECT user_id, sku, used FROM quota_usage")
        .fetch_all(db)
        .await?
    {
        let (user, sku, used): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        let want = usage.remove(&(user.clone(), sku.clone())).unwrap_or(0);
        if used != want {
            bad.push(format!(
                "quota of {user} for {sku}: {used} counted, but orders and entitlements hold {want}"
            ));
        }
    }
    for ((user, sku), want) in usage {
        bad.push(format!(
            "quota of {user} for {sku}: orders and entitlements hold {want} but nothing is counted"
        ));
    }

    // Redemption codes: used exactly as often as redeemed, never beyond max_uses (a CHECK).
    for r in sqlx::query(
        "SELECT c.code, c.used_count, (SELECT COUNT(*) FROM redemptions r WHERE r.code = c.code)
         FROM redemption_codes c",
    )
    .fetch_all(db)
    .await?
    {
        let (code, used, redeemed): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if used != redeemed {
            bad.push(format!(
                "code {code}: used_count {used} but {redeemed} redemptions"
            ));
        }
    }

    // Fulfilment follows the order: active order entitlements only on paid or fulfilled orders,
    // revoked ones only on cancelled orders or orders whose payment is disputed, a shipped
    // shipment only on a fulfilled order, an intercepted one only on a cancelled one.
    for r in sqlx::query(
        "SELECT e.entitlement_id, e.status, o.status,
             (SELECT COUNT(*) FROM disputes d WHERE d.order_id = o.order_id)
         FROM entitlements e JOIN orders o ON o.order_id = e.source_id WHERE e.source = 'order'",
    )
    .fetch_all(db)
    .await?
    {
        let (id, state, order): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let disputed = r.get::<i64, _>(3) > 0;
        let ok = match state.as_str() {
            "active" => order == "fulfilled" || order == "paid",
            _ => order == "cancelled" || disputed,
        };
        if !ok {
            bad.push(format!(
                "entitlement {id} is {state} but its order is {order}"
            ));
        }
    }
    for r in sqlx::query(
        "SELECT s.order_id, s.status, o.status FROM shipments s JOIN orders o ON o.order_id = s.order_id",
    )
    .fetch_all(db)
    .await?
    {
        let (id, state, order): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let ok = match state.as_str() {
            "shipped" => order == "fulfilled",
            "intercepted" => order == "cancelled",
            _ => order == "paid",
        };
        if !ok {
            bad.push(format!("order {id}: shipment {state} but the order is {order}"));
        }
    }

    // The ledger: a return only of what was captured; never both a release and a capture of
    // one hold.
    let orphan_returns =
        "SELECT a.order_id, a.resource FROM ledger a WHERE a.action = 'return' AND NOT EXISTS
         (SELECT 1 FROM ledger b WHERE b.order_id = a.order_id AND b.resource = a.resource AND b.action = 'capture')";
    violations(db, orphan_returns, &mut bad, |order, resource| {
        format!("order {order}: {resource} returned without a capture")
    })
    .await?;
    let both = "SELECT a.order_id, a.resource FROM ledger a JOIN ledger b ON a.order_id = b.order_id AND a.resource = b.resource
         WHERE a.action = 'release' AND b.action = 'capture'";
    violations(db, both, &mut bad, |order, resource| {
        format!("order {order}: {resource} both released and captured")
    })
    .await?;

    // Authorizations: goods never leave on one that was not captured, and a void is only ever
    // of an authorization.
    let uncaptured =
        "SELECT o.order_id, p.payment_id FROM orders o JOIN payments p ON p.order_id = o.order_id
         WHERE o.status = 'fulfilled' AND p.status = 'captured'
             AND p.capture_before IS NOT NULL AND p.captured_at IS NULL";
    violations(db, uncaptured, &mut bad, |order, payment| {
        format!("order {order}: fulfilled, but its authorization {payment} was never captured")
    })
    .await?;
    let voids = "SELECT r.order_id, r.payment_id FROM refunds r JOIN payments p ON p.payment_id = r.payment_id
         WHERE r.method = 'void' AND p.capture_before IS NULL";
    violations(db, voids, &mut bad, |order, payment| {
        format!("order {order}: payment {payment} was voided, but it was never an authorization")
    })
    .await?;
    Ok(bad)
}

/// Runs `sql`, which selects (order, what of it) for every row that breaks an invariant, and
/// adds what `say` makes of each row to `bad`.
async fn violations(
    db: &Db,
    sql: &str,
    bad: &mut Vec<String>,
    say: impl Fn(String, String) -> String,
) -> Result<(), sqlx::Error> {
    for r in sqlx::query(sql).fetch_all(db).await? {
        bad.push(say(r.get(0), r.get(1)));
    }
    Ok(())
}

/// Every partial refund, as the audit's queries fail (a stored row that does not parse is a
/// data error like any other).
async fn partial_refunds(db: &Db) -> Result<Vec<crate::order_refunds::OrderRefund>, sqlx::Error> {
    crate::order_refunds::all_refunds(db)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))
}

/// An order as the invariants read it.
struct OrderRow {
    status: String,
    expires_at: Option<i64>,
    total: i64,
    /// What paid it: `payment` is its payable amount.
    paid: crate::order_refunds::Split,
}

/// Partial refunds: never more than the order's total, nor any source more than it paid; only
/// of paid or fulfilled orders, and of the payment that paid them; the wallet, points and
/// coupon shares of the succeeded ones are exactly what the holds count as given back; every
/// restocked unit is a received return's.
async fn partial_refund_invariants(
    db: &Db,
    orders: &BTreeMap<String, OrderRow>,
    holds: &[(String, String, String, i64, String, i64)],
    items: &[(String, String, i64, i64)],
    bad: &mut Vec<String>,
) -> Result<(), sqlx::Error> {
    use crate::order_refunds::Split;
    let refunds = partial_refunds(db).await?;
    let captured_payment: BTreeMap<String, String> =
        sqlx::query("SELECT order_id, payment_id FROM payments WHERE status = 'captured'")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    // order -> (value, given of each source) over pending and succeeded; succeeded shares.
    let mut taken: BTreeMap<&str, (i64, Split)> = BTreeMap::new();
    let mut given: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for f in refunds.iter().filter(|f| f.status != "failed") {
        let id = &f.refund_id;
        let slot = taken.entry(f.order_id.as_str()).or_default();
        slot.0 += f.value;
        slot.1 = slot.1.plus(f.split);
        match orders.get(&f.order_id).map(|o| o.status.as_str()) {
            Some("paid") | Some("fulfilled") => {}
            other => bad.push(format!(
                "partial refund {id} of order {}: the order is {}",
                f.order_id,
                other.unwrap_or("missing")
            )),
        }
        if f.split.payment > 0 && f.payment_id.as_ref() != captured_payment.get(&f.order_id) {
            bad.push(format!(
                "partial refund {id} of order {}: gives back to payment {:?}, not the one that paid it",
                f.order_id, f.payment_id
            ));
        }
        if f.status == "succeeded" {
            for (resource, share) in [
                ("wallet", f.split.wallet),
                ("points", f.split.points),
                ("coupon", f.split.coupon),
            ] {
                *given.entry((f.order_id.as_str(), resource)).or_default() += share;
            }
        }
    }
    for (order_id, (value, split)) in &taken {
        let Some(order) = orders.get(*order_id) else {
            continue;
        };
        let (paid, total) = (order.paid, order.total);
        let over = *value > total
            || split.payment > paid.payment
            || split.wallet > paid.wallet
            || split.points > paid.points
            || split.coupon > paid.coupon;
        if over {
            bad.push(format!(
                "order {order_id}: partial refunds of {value} ({split:?}) exceed what paid it ({total}: {paid:?})"
            ));
        }
    }
    for (order_id, resource, _, _, _, returned) in holds {
        if resource == "stock" {
            continue;
        }
        let want = given
            .remove(&(order_id.as_str(), resource.as_str()))
            .unwrap_or(0);
        if *returned != want {
            bad.push(format!(
                "order {order_id}: its {resource} hold counts {returned} given back, but its succeeded partial refunds gave {want}"
            ));
        }
    }
    for ((order_id, resource), share) in given {
        if share > 0 {
            bad.push(format!(
                "order {order_id}: partial refunds gave back {share} of a {resource} it never held"
            ));
        }
    }
    let mut returned: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in sqlx::query("SELECT order_id, lines FROM order_returns WHERE status <> 'requested'")
        .fetch_all(db)
        .await?
    {
        let order_id: String = r.get(0);
        let lines: Vec<orderflow_workflows::model::OrderLine> =
            serde_json::from_str(&r.get::<String, _>(1)).unwrap_or_default();
        for l in lines {
            *returned.entry((order_id.clone(), l.sku)).or_default() += l.quantity;
        }
    }
    for (order_id, sku, _, restocked) in items {
        let want = returned
            .remove(&(order_id.clone(), sku.clone()))
            .unwrap_or(0);
        if *restocked != want {
            bad.push(format!(
                "order {order_id}: {restocked} of {sku} restocked, but its received returns hold {want}"
            ));
        }
    }
    Ok(())
}

/// A count and a sum of money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Tally {
    pub count: u64,
    pub amount: i64,
}

impl Tally {
    fn add(&mut self, amount: i64) {
        self.count += 1;
        self.amount = self.amount.saturating_add(amount);
    }
}

/// Something about one payment that is not as it must be, and what repairs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Discrepancy {
    /// Stable: `no_webhook`, `inbox_stuck`, `not_decided`, `refund_failed`, `refund_owner_gone`,
    /// `not_at_provider`, `amount_differs`, `applied_to_unpaid_order`, `unknown_refund`,
    /// `refund_of_applied_payment`, `over_refunded`, `refund_not_at_provider`, `owner_gone`,
    /// `dispute_unrecorded`, `dispute_differs`, `dispute_not_at_provider`,
    /// `partial_refund_not_at_provider`, `shipped_not_captured`, `authorization_lapsed`,
    /// `void_not_at_provider`.
    #[schema(value_type = String)]
    pub problem: &'static str,
    pub order_id: Option<String>,
    pub payment_id: String,
    pub amount: i64,
    pub detail: String,
    /// What repairs it.
    pub repair: String,
}

/// Money on its way to being applied or refunded, and the durable run that owns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InFlight {
    pub order_id: Option<String>,
    pub payment_id: String,
    pub amount: i64,
    /// `refund_pending`, `decision_holding`, `handed_to_order`, `handed_to_decision`,
    /// `owed_back`, `inbox_received`, `partial_refund_pending` (its amount is the payment's
    /// share).
    #[schema(value_type = String)]
    pub state: &'static str,
    /// The workflow that will finish it (or `inbox-redrive`, the reconciliation schedule).
    pub owner: String,
}

/// The two-way audit: every payment the provider captured is applied to exactly one order or
/// refunded (or on its way, owned by a durable run); every refund at the provider is one we
/// meant, and none exceeds its payment; everything we recorded is at the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MoneyReport {
    /// Every payment the provider captured.
    pub captured: Tally,
    /// Authorized and not captured yet (each also counted as what it is: applied, or on its
    /// way to a void).
    pub authorized: Tally,
    /// Authorizations voided, as recorded: nothing was charged.
    pub voided: Tally,
    /// Applied to an order that is paid or fulfilled.
    pub applied: Tally,
    /// Refunded once, as recorded.
    pub refunded: Tally,
    /// Given back in part, from payments that paid their orders (partial refunds and returns:
    /// each counted once, by its payment share, as the provider holds it).
    pub partially_refunded: Tally,
    /// On their way, with a running owner.
    pub in_flight: Tally,
    /// Captured, and neither applied, refunded nor owned by anything that will finish it.
    pub stranded: Tally,
    pub in_progress: Vec<InFlight>,
    /// Payments the payer's bank disputes, as recorded (each also counted above as what it
    /// otherwise is: the provider takes the disputed amount back itself).
    pub disputed: Tally,
    /// Every recorded dispute and what was done; `flagged_for_ops` ones wait for ops.
    pub disputes: Vec<crate::disputes::Dispute>,
    pub discrepancies: Vec<Discrepancy>,
    /// Refunds owed outside the provider (admin orders paid offline): for ops to pay back.
    pub offline_refunds: Vec<Discrepancy>,
    /// The conservation invariants of [`check`] that do not hold.
    pub invariants: Vec<String>,
    /// Orders stopped on a permanent error, waiting for ops (their money stays held, not lost).
    pub needs_attention: Vec<crate::attention::Attention>,
    /// What reconciliation repaired, newest first (the last [`REPAIRS_SHOWN`]).
    pub repairs: Vec<Repair>,
}

/// How many of reconciliation's latest repairs the report lists.
pub const REPAIRS_SHOWN: i64 = 100;

/// One repair by reconciliation: the order, what was done, and the run that did it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Repair {
    pub order_id: String,
    pub detail: String,
    /// The reconciliation run (`reconciled:<run>` in the order's events).
    pub run_id: String,
    pub at: i64,
}

impl MoneyReport {
    /// Whether nothing is wrong (in-flight money is not wrong while its owner runs; an order
    /// waiting for ops is).
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
            && self.invariants.is_empty()
            && self.needs_attention.is_empty()
    }

    /// One line per figure, then one per discrepancy: what `orderflow audit` prints.
    pub fn render(&self) -> String {
        let t = |t: Tally| format!("{:>5} ({} minor units)", t.count, t.amount);
        let mut out = format!(
            "payments captured at the provider {}\n  authorized, not captured yet  {}\n  voided                        {}\n  applied to an order           {}\n  refunded                      {}\n  of applied ones, given back   {}\n  in flight (owned by a run)    {}\n  stranded                      {}\n  disputed by the payer's bank  {}\n",
            t(self.captured),
            t(self.authorized),
            t(self.voided),
            t(self.applied),
            t(self.refunded),
            t(self.partially_refunded),
            t(self.in_flight),
            t(self.stranded),
            t(self.disputed)
        );
        for f in &self.in_progress {
            let rest = format!("{}, owned by {}", f.state, f.owner);
            out.push_str(&payment_line(
                "in flight",
                &f.payment_id,
                f.amount,
                f.order_id.as_deref(),
                &rest,
            ));
        }
        for d in &self.disputes {
            let flag = if d.flagged_for_ops {
                "; flagged for ops"
            } else {
                ""
            };
            let amount = format!("{} of it", d.amount);
            let rest = format!("{}{flag}", d.detail);
            out.push_str(&payment_line(
                "disputed",
                &d.payment_id,
                amount,
                Some(&d.order_id),
                &rest,
            ));
        }
        for d in self.offline_refunds.iter() {
            out.push_str(&discrepancy_line("offline", d));
        }
        out.push_str(&format!(
            "{} discrepancies, {} invariant violations\n",
            self.discrepancies.len(),
            self.invariants.len()
        ));
        for d in &self.discrepancies {
            out.push_str(&discrepancy_line(d.problem, d));
        }
        for v in &self.invariants {
            out.push_str(&format!("invariant: {v}\n"));
        }
        out.push_str(&format!(
            "{} orders need attention\n",
            self.needs_attention.len()
        ));
        for a in &self.needs_attention {
            out.push_str(&format!(
                "needs_attention: order {} stopped {} time(s) on {}: {}; repair: fix the cause, then POST /v1/admin/orders/{}/retry\n",
                a.order_id, a.raised, a.code, a.message, a.order_id
            ));
        }
        for r in &self.repairs {
            out.push_str(&format!(
                "repaired by reconciliation {}: order {}: {}\n",
                r.run_id, r.order_id, r.detail
            ));
        }
        out
    }
}

/// One line of the rendered report about a payment: `<label>: payment <id> (<amount>) of order
/// <order>: <rest>`.
fn payment_line(
    label: &str,
    payment_id: &str,
    amount: impl std::fmt::Display,
    order_id: Option<&str>,
    rest: &str,
) -> String {
    let order_id = order_id.unwrap_or("-");
    format!("{label}: payment {payment_id} ({amount}) of order {order_id}: {rest}\n")
}

/// A discrepancy's line: what is wrong, and what repairs it.
fn discrepancy_line(label: &str, d: &Discrepancy) -> String {
    let rest = format!("{}; repair: {}", d.detail, d.repair);
    payment_line(label, &d.payment_id, d.amount, d.order_id.as_deref(), &rest)
}

/// Reconciliation's latest repairs, newest first.
async fn repairs(db: &Db) -> Result<Vec<Repair>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT order_id, detail, run_id, at FROM reconcile_log WHERE action = 'repaired'
         ORDER BY at DESC, order_id LIMIT $1",
    )
    .bind(REPAIRS_SHOWN)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Repair {
        order_id: r.get(0),
        detail: r.get(1),
        run_id: r.get(2),
        at: r.get(3),
    })
    .collect())
}

/// Inbox outcomes that handed the payment to its `payment-{payment_id}` decision.
const DECIDED_OUTCOMES: [&str; 5] = [
    "unknown_order",
    "order_mismatch",
    "amount_mismatch",
    "refund_started",
    "workflow_missing",
];

/// Unprocessed inbox events younger than this are in flight (the re-drive will hand them on);
/// older ones are stuck.
const INBOX_STUCK_AFTER_MS: i64 = 10 * 60 * 1000;

struct OurPayment {
    order_id: String,
    amount: i64,
    status: String,
}

struct OurRefund {
    status: String,
    amount: i64,
    provider_refund_id: Option<String>,
    failure: Option<String>,
    owner: Option<String>,
    /// `refund`, or `void`.
    method: String,
}

impl OurRefund {
    /// A succeeded void of an authorization: the provider holds no refund for it.
    fn is_void(&self) -> bool {
        self.status == "succeeded" && self.method == "void"
    }
}

/// The two-way money audit of our database against `ledger`, the provider's own listing, at
/// `now_ms`. It never writes. In-flight money is listed with the run that owns it; call
/// [`confirm_owners`] to check those runs are alive.
pub async fn money(
    db: &Db,
    ledger: &crate::provider::ProviderLedger,
    now_ms: i64,
) -> Result<MoneyReport, sqlx::Error> {
    let mut report = MoneyReport {
        invariants: check(db).await?,
        needs_attention: crate::attention::open(db).await?,
        repairs: repairs(db).await?,
        disputes: crate::disputes::all(db).await?,
        ..MoneyReport::default()
    };
    let payments: BTreeMap<String, OurPayment> =
        sqlx::query("SELECT payment_id, order_id, amount, status FROM payments")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                let p = OurPayment {
                    order_id: r.get(1),
                    amount: r.get(2),
                    status: r.get(3),
                };
                (r.get(0), p)
            })
            .collect();
    let refunds: BTreeMap<String, OurRefund> = sqlx::query(
        "SELECT payment_id, status, amount, provider_refund_id, failure, owner, method FROM refunds",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        let f = OurRefund {
            status: r.get(1),
            amount: r.get(2),
            provider_refund_id: r.get(3),
            failure: r.get(4),
            owner: r.get(5),
            method: r.get(6),
        };
        (r.get(0), f)
    })
    .collect();
    let orders: BTreeMap<String, (String, i64)> =
        sqlx::query("SELECT order_id, status, payable_amount FROM orders")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
    let decisions: BTreeMap<String, (String, String, Option<String>)> =
        sqlx::query("SELECT payment_id, order_id, state, detail FROM payment_decisions")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
    // Payment -> (order, outcome, received_at, processed) of its most recent inbox event.
    let mut inbox: BTreeMap<String, (String, String, i64, bool)> = BTreeMap::new();
    let payment_events = format!(
        "SELECT payment_id, order_id, outcome, received_at, processed_at FROM webhook_inbox
         WHERE event_type IN {} ORDER BY received_at",
        crate::payments::PAYMENT_EVENTS_SQL
    );
    for r in sqlx::query(&payment_events).fetch_all(db).await? {
        let processed = r.get::<Option<i64>, _>(4).is_some();
        inbox.insert(r.get(0), (r.get(1), r.get(2), r.get(3), processed));
    }
    let mut provider_refunds: BTreeMap<&str, Vec<&crate::provider::RefundObject>> = BTreeMap::new();
    for r in &ledger.refunds {
        provider_refunds
            .entry(r.payment_id.as_str())
            .or_default()
            .push(r);
    }
    let provider_payments: BTreeMap<&str, &crate::provider::PaymentObject> =
        ledger.payments.iter().map(|p| (p.id.as_str(), p)).collect();
    let partial = partial_refunds(db).await?;
    audit_partial_refunds(&mut report, &partial, &provider_refunds);
    let mut partial_by_payment: BTreeMap<&str, Vec<&crate::order_refunds::OrderRefund>> =
        BTreeMap::new();
    for f in &partial {
        if let Some(pid) = f.payment_id.as_deref() {
            partial_by_payment.entry(pid).or_default().push(f);
        }
    }
    // Provider refunds that a partial refund recorded (or may be recording: a pending one of
    // the same payment and amount, whose answer is on its way).
    let partial_meant = |r: &crate::provider::RefundObject| {
        partial_by_payment
            .get(r.payment_id.as_str())
            .into_iter()
            .flatten()
            .any(|f| match f.status.as_str() {
                "succeeded" => f.provider_refund_id.as_deref() == Some(r.id.as_str()),
                "pending" => f.split.payment == r.amount,
                _ => false,
            })
    };

    for p in &ledger.payments {
        match p.status.as_str() {
            "authorized" => report.authorized.add(p.amount),
            "voided" | "expired" => {}
            _ => report.captured.add(p.amount),
        }
        let pid = p.id.clone();
        let stranded = |report: &mut MoneyReport,
                        problem: &'static str,
                        order: Option<&String>,
                        detail: String,
                        repair: &str| {
            report.stranded.add(p.amount);
            report.discrepancies.push(Discrepancy {
                problem,
                order_id: order.cloned(),
                payment_id: pid.clone(),
                amount: p.amount,
                detail,
                repair: repair.to_owned(),
            });
        };
        let flying = |report: &mut MoneyReport, order: &String, state, owner: String| {
            report.in_flight.add(p.amount);
            report.in_progress.push(InFlight {
                order_id: Some(order.clone()),
                payment_id: p.id.clone(),
                amount: p.amount,
                state,
                owner,
            });
        };
        match payments.get(&p.id) {
            Some(ours) if ours.amount != p.amount => stranded(
                &mut report,
                "amount_differs",
                Some(&ours.order_id),
                format!(
                    "recorded as {} but the provider captured {}",
                    ours.amount, p.amount
                ),
                "an operator compares the provider's payment with ours",
            ),
            Some(ours) if ours.status == "captured" => match orders.get(&ours.order_id) {
                Some((status, _)) if p.status == "expired" => stranded(
                    &mut report,
                    "authorization_lapsed",
                    Some(&ours.order_id),
                    format!("the order is {status}, but its authorization lapsed uncaptured"),
                    "an operator collects the payment from the customer or cancels the order",
                ),
                Some((status, _)) if status == "fulfilled" && p.status == "authorized" => stranded(
                    &mut report,
                    "shipped_not_captured",
                    Some(&ours.order_id),
                    "the goods shipped, but the provider holds the payment only authorized".into(),
                    "capture it at the provider before capture_before",
                ),
                Some((status, payable))
                    if (status == "paid" || status == "fulfilled") && *payable == p.amount =>
                {
                    report.applied.add(p.amount)
                }
                other => stranded(
                    &mut report,
                    "applied_to_unpaid_order",
                    Some(&ours.order_id),
                    format!(
                        "captured for an order that is {}",
                        other.map_or("missing", |o| o.0.as_str())
                    ),
                    "reconciliation resumes the order; otherwise an operator refunds it",
                ),
            },
            Some(ours) => match refunds.get(&p.id) {
                None => {
                    let owner = match decisions.get(&p.id) {
                        Some(_) => orderflow_workflows::payment_workflow_id(&p.id),
                        None => orderflow_workflows::workflow_id(&ours.order_id),
                    };
                    flying(&mut report, &ours.order_id, "owed_back", owner)
                }
                Some(f) if f.status == "pending" => {
                    let owner = f
                        .owner
                        .clone()
                        .unwrap_or_else(|| orderflow_workflows::refund_workflow_id(&p.id));
                    flying(&mut report, &ours.order_id, "refund_pending", owner)
                }
                Some(f) if f.status == "failed" => stranded(
                    &mut report,
                    "refund_failed",
                    Some(&ours.order_id),
                    format!(
                        "the provider refused the refund: {}",
                        f.failure.as_deref().unwrap_or("no reason recorded")
                    ),
                    &format!("fix the cause, then POST /v1/admin/refunds/{}/retry", p.id),
                ),
                Some(f) if f.is_void() => {
                    if p.status == "voided" && !provider_refunds.contains_key(p.id.as_str()) {
                        report.voided.add(p.amount);
                    } else {
                        stranded(
                            &mut report,
                            "void_not_at_provider",
                            Some(&ours.order_id),
                            format!("recorded as voided, but the provider shows it {}", p.status),
                            "an operator compares the provider's payment with ours",
                        )
                    }
                }
                Some(f) => {
                    let at_provider = provider_refunds.get(p.id.as_str());
                    let matches = at_provider.is_some_and(|rs| {
                        rs.len() == 1
                            && Some(&rs[0].id) == f.provider_refund_id.as_ref()
                            && rs[0].amount == f.amount
                            && f.amount == p.amount
                    });
                    if matches {
                        report.refunded.add(p.amount);
                    } else {
                        stranded(
                            &mut report,
                            "refund_not_at_provider",
                            Some(&ours.order_id),
                            format!(
                                "our refund {:?} of {} is not what the provider holds: {:?}",
                                f.provider_refund_id,
                                f.amount,
                                at_provider.map(|rs| rs
                                    .iter()
                                    .map(|r| (&r.id, r.amount))
                                    .collect::<Vec<_>>())
                            ),
                            "an operator compares the provider's refunds with ours",
                        )
                    }
                }
            },
            None => match (decisions.get(&p.id), inbox.get(&p.id)) {
                (Some((order, state, _)), _) if state == "holding" => flying(
                    &mut report,
                    order,
                    "decision_holding",
                    orderflow_workflows::payment_workflow_id(&p.id),
                ),
                (Some((order, state, _)), _) if state == "applied" => flying(
                    &mut report,
                    order,
                    "handed_to_order",
                    orderflow_workflows::workflow_id(order),
                ),
                (Some((order, state, detail)), _) => stranded(
                    &mut report,
                    "not_decided",
                    Some(order),
                    format!(
                        "its decision ended {state} ({}) but the payment is neither applied nor refunded",
                        detail.as_deref().unwrap_or("")
                    ),
                    "redeliver the webhook: a new decision re-reads the provider and refunds it",
                ),
                (None, Some((order, _, received, false)))
                    if now_ms.saturating_sub(*received) < INBOX_STUCK_AFTER_MS =>
                {
                    flying(&mut report, order, "inbox_received", "inbox-redrive".into())
                }
                // Handed on, and its new owner has not written anything yet: the outcome
                // names it (the order's workflow, or the payment's decision).
                (None, Some((order, outcome, _, true))) if outcome == "signalled" => flying(
                    &mut report,
                    order,
                    "handed_to_order",
                    orderflow_workflows::workflow_id(order),
                ),
                (None, Some((order, outcome, _, true)))
                    if DECIDED_OUTCOMES.contains(&outcome.as_str()) =>
                {
                    flying(
                        &mut report,
                        order,
                        "handed_to_decision",
                        orderflow_workflows::payment_workflow_id(&p.id),
                    )
                }
                (None, Some((order, outcome, _, processed))) => stranded(
                    &mut report,
                    "inbox_stuck",
                    Some(order),
                    format!(
                        "its webhook was received ({outcome}, processed: {processed}) but the payment was never handed on"
                    ),
                    "check that reconciliation runs (it re-drives the inbox) and that Temporal is up",
                ),
                (None, None) => stranded(
                    &mut report,
                    "no_webhook",
                    Some(&p.order_id),
                    "captured at the provider, but no webhook for it ever reached orderflow".into(),
                    "ask the provider to resend the webhook: orderflow then applies or refunds it",
                ),
            },
        }
    }

    // The other direction: every refund at the provider is one we meant, once, within its
    // payment; everything we recorded is at the provider.
    for (pid, rs) in &provider_refunds {
        let ours = payments.get(*pid);
        let our_refund = refunds.get(*pid);
        let total: i64 = rs.iter().map(|r| r.amount).sum();
        let captured = provider_payments.get(pid).map_or(0, |p| p.captured());
        let order = ours.map(|p| p.order_id.clone());
        let mut bad = |problem, detail: String| {
            report.discrepancies.push(Discrepancy {
                problem,
                order_id: order.clone(),
                payment_id: (*pid).to_owned(),
                amount: total,
                detail,
                repair: "an operator reviews the provider's refunds of this payment".into(),
            })
        };
        if total > captured {
            bad(
                "over_refunded",
                format!("{total} refunded of {captured} captured"),
            );
        }
        if ours.is_some_and(|p| p.status == "captured") && !rs.iter().all(|r| partial_meant(r)) {
            bad(
                "refund_of_applied_payment",
                "the provider refunded a payment that paid its order, beyond its partial refunds"
                    .into(),
            );
        }
        for r in rs {
            let meant = our_refund.is_some_and(|f| f.provider_refund_id.as_ref() == Some(&r.id))
                || partial_meant(r);
            if !meant {
                bad(
                    "unknown_refund",
                    format!(
                        "refund {} of {} is not one orderflow recorded",
                        r.id, r.amount
                    ),
                );
            }
        }
    }
    audit_disputes(db, &mut report, &provider_payments, now_ms).await?;
    for (pid, ours) in &payments {
        if pid.starts_with("offline-") {
            if let Some(f) = refunds.get(pid).filter(|f| f.status == "failed") {
                report.offline_refunds.push(Discrepancy {
                    problem: "offline_refund",
                    order_id: Some(ours.order_id.clone()),
                    payment_id: pid.clone(),
                    amount: f.amount,
                    detail: "paid offline and cancelled: owed back outside orderflow".into(),
                    repair: "pay it back by the means it was paid".into(),
                });
            }
            continue;
        }
        if !provider_payments.contains_key(pid.as_str()) {
            report.discrepancies.push(Discrepancy {
                problem: "not_at_provider",
                order_id: Some(ours.order_id.clone()),
                payment_id: pid.clone(),
                amount: ours.amount,
                detail: "recorded by orderflow, but the provider never captured it".into(),
                repair: "an operator checks the webhook that reported it (forged or misrouted?)"
                    .into(),
            });
        }
    }
    Ok(report)
}

/// Partial refunds of applied payments: a succeeded one's payment share is at the provider,
/// once, for its amount; a pending one is in flight, owned by its workflow.
fn audit_partial_refunds(
    report: &mut MoneyReport,
    partial: &[crate::order_refunds::OrderRefund],
    provider_refunds: &BTreeMap<&str, Vec<&crate::provider::RefundObject>>,
) {
    for f in partial.iter().filter(|f| f.split.payment > 0) {
        let payment_id = f.payment_id.clone().unwrap_or_default();
        match f.status.as_str() {
            "pending" => {
                report.in_flight.add(f.split.payment);
                report.in_progress.push(InFlight {
                    order_id: Some(f.order_id.clone()),
                    payment_id,
                    amount: f.split.payment,
                    state: "partial_refund_pending",
                    owner: orderflow_workflows::order_refund_workflow_id(&f.refund_id),
                });
            }
            "succeeded" => {
                let at_provider = provider_refunds
                    .get(payment_id.as_str())
                    .into_iter()
                    .flatten()
                    .find(|r| f.provider_refund_id.as_deref() == Some(r.id.as_str()));
                match at_provider {
                    Some(r) if r.amount == f.split.payment => {
                        report.partially_refunded.add(f.split.payment)
                    }
                    other => report.discrepancies.push(Discrepancy {
                        problem: "partial_refund_not_at_provider",
                        order_id: Some(f.order_id.clone()),
                        payment_id,
                        amount: f.split.payment,
                        detail: format!(
                            "partial refund {} gave back {} as {:?}, but the provider holds {:?}",
                            f.refund_id,
                            f.split.payment,
                            f.provider_refund_id,
                            other.map(|r| (&r.id, r.amount))
                        ),
                        repair: "an operator compares the provider's refunds with ours".into(),
                    }),
                }
            }
            _ => {}
        }
    }
}

/// Both directions for disputes: every payment the provider shows disputed has its dispute
/// recorded (or its `charge.disputed` event is waiting for the inbox re-drive), for the same
/// amount; every recorded dispute is one the provider shows.
async fn audit_disputes(
    db: &Db,
    report: &mut MoneyReport,
    provider_payments: &BTreeMap<&str, &crate::provider::PaymentObject>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let waiting: Vec<String> = sqlx::query_scalar(
        "SELECT payment_id FROM webhook_inbox
         WHERE event_type = 'charge.disputed' AND processed_at IS NULL AND received_at >= $1",
    )
    .bind(now_ms.saturating_sub(INBOX_STUCK_AFTER_MS))
    .fetch_all(db)
    .await?;
    let recorded: BTreeMap<&str, &crate::disputes::Dispute> = report
        .disputes
        .iter()
        .map(|d| (d.payment_id.as_str(), d))
        .collect();
    let mut found = Vec::new();
    for p in provider_payments.values() {
        let Some(disputed) = p.disputed_amount else {
            continue;
        };
        let (problem, detail, repair) = match recorded.get(p.id.as_str()) {
            Some(d) if d.amount == disputed => continue,
            None if waiting.contains(&p.id) => continue,
            Some(d) => (
                "dispute_differs",
                format!(
                    "recorded as a dispute of {} but the provider shows {disputed}",
                    d.amount
                ),
                "an operator compares the provider's dispute with ours",
            ),
            None => (
                "dispute_unrecorded",
                format!(
                    "the provider shows {disputed} of it disputed, but orderflow never heard of the dispute"
                ),
                "reconciliation's sweep records it from the provider's listing (within a run); else ask the provider to resend the charge.disputed webhook",
            ),
        };
        found.push(Discrepancy {
            problem,
            order_id: Some(p.order_id.clone()),
            payment_id: p.id.clone(),
            amount: disputed,
            detail,
            repair: repair.into(),
        });
    }
    for d in &report.disputes {
        report.disputed.add(d.amount);
        if provider_payments
            .get(d.payment_id.as_str())
            .is_none_or(|p| p.disputed_amount.is_none())
        {
            found.push(Discrepancy {
                problem: "dispute_not_at_provider",
                order_id: Some(d.order_id.clone()),
                payment_id: d.payment_id.clone(),
                amount: d.amount,
                detail: "recorded as disputed, but the provider shows no dispute of it".into(),
                repair: "an operator checks the webhook that reported it (forged or misrouted?)"
                    .into(),
            });
        }
    }
    report.discrepancies.extend(found);
    Ok(())
}

/// Moves every in-flight item whose owner is not running to the discrepancies: money that a
/// durable run must finish is stranded when no such run exists.
pub async fn confirm_owners(
    report: &mut MoneyReport,
    client: &temporalio_client::Client,
) -> Result<(), crate::StoreError> {
    let mut still = Vec::new();
    for f in std::mem::take(&mut report.in_progress) {
        if f.owner == "inbox-redrive" {
            still.push(f);
            continue;
        }
        let running = crate::reconcile::workflow_status(client, &f.owner).await? == "running";
        if running {
            still.push(f);
        } else {
            report.in_flight.count -= 1;
            report.in_flight.amount -= f.amount;
            report.stranded.add(f.amount);
            report.discrepancies.push(Discrepancy {
                problem: "owner_gone",
                order_id: f.order_id.clone(),
                payment_id: f.payment_id.clone(),
                amount: f.amount,
                detail: format!("{} but its owner {} is not running", f.state, f.owner),
                repair: "redeliver the webhook (its decision refunds it, exactly once), or retry the refund"
                    .into(),
            });
        }
    }
    report.in_progress = still;
    Ok(())
}

/// The audit as ops run it (`orderflow audit`, `GET /v1/admin/audit`): the provider's listing,
/// our database, and each in-flight owner asked whether it runs.
pub async fn run(
    db: &Db,
    provider: &crate::provider::PaymentProvider,
    client: &temporalio_client::Client,
    now_ms: i64,
) -> Result<MoneyReport, crate::StoreError> {
    let ledger = provider
        .ledger()
        .await
        .map_err(|e| crate::StoreError::unavailable(crate::Service::Provider, e))?;
    let mut report = money(db, &ledger, now_ms).await?;
    confirm_owners(&mut report, client).await?;
    Ok(report)
}
