//! The conservation invariants of DESIGN.md section 3, checked against the database.
//!
//! Like Jepsen's bank test: every scenario test ends by calling [`check`], which recomputes
//! what each SKU, coupon, wallet and points account must hold from the orders' holds and
//! compares. It reads everything into memory, so it is meant for tests and audits of modest
//! databases, and it never writes.

use crate::Db;
use sqlx::Row;
use std::collections::BTreeMap;

/// Every violation found, as a readable sentence. Empty means the data is consistent.
pub async fn check(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let mut bad = Vec::new();

    // (order_id, resource) -> (subject, amount, state)
    let holds: Vec<(String, String, String, i64, String)> = sqlx::query(
        "SELECT order_id, resource, subject, amount, state FROM holds ORDER BY order_id, resource",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    let orders: BTreeMap<String, (String, i64, Option<i64>)> =
        sqlx::query("SELECT order_id, status, payable_amount, expires_at FROM orders")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
    let items: Vec<(String, String, i64)> =
        sqlx::query("SELECT order_id, sku, quantity FROM order_items")
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();

    // What the holds say each resource row must hold: (reserved, captured) per subject.
    let mut expect: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let stock_state: BTreeMap<&str, &str> = holds
        .iter()
        .filter(|h| h.1 == "stock")
        .map(|h| (h.0.as_str(), h.4.as_str()))
        .collect();
    for (order_id, sku, quantity) in &items {
        let slot = expect.entry(("stock".into(), sku.clone())).or_default();
        match stock_state.get(order_id.as_str()) {
            Some(&"reserved") => slot.0 += quantity,
            Some(&"captured") => slot.1 += quantity,
            Some(_) => {}
            None => bad.push(format!("order {order_id}: has items but no stock hold")),
        }
    }
    for (order_id, resource, subject, amount, state) in &holds {
        if resource != "stock" {
            let slot = expect
                .entry((resource.clone(), subject.clone()))
                .or_default();
            match state.as_str() {
                "reserved" => slot.0 += amount,
                "captured" => slot.1 += amount,
                _ => {}
            }
        }
        // Per order: the status says where every hold must be.
        let status = orders.get(order_id).map(|o| o.0.as_str());
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
    for (order_id, (status, payable, expires_at)) in &orders {
        let paid = captured.remove(order_id).unwrap_or_default();
        match status.as_str() {
            "paid" | "fulfilled" => {
                let want: Vec<i64> = if *payable > 0 { vec![*payable] } else { vec![] };
                if paid != want {
                    bad.push(format!(
                        "order {order_id}: paid with captured payments {paid:?}, expected {want:?}"
                    ));
                }
                if expires_at.is_some() {
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
    // a shipped shipment only on a fulfilled order, an intercepted one only on a cancelled one.
    for r in sqlx::query(
        "SELECT e.entitlement_id, e.status, o.status FROM entitlements e
         JOIN orders o ON o.order_id = e.source_id WHERE e.source = 'order'",
    )
    .fetch_all(db)
    .await?
    {
        let (id, state, order): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let ok = match state.as_str() {
            "active" => order == "fulfilled" || order == "paid",
            _ => order == "cancelled",
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

    // The ledger: a return only of what was captured.
    let orphan_returns = sqlx::query(
        "SELECT a.order_id, a.resource FROM ledger a WHERE a.action = 'return' AND NOT EXISTS
         (SELECT 1 FROM ledger b WHERE b.order_id = a.order_id AND b.resource = a.resource AND b.action = 'capture')",
    )
    .fetch_all(db)
    .await?;
    for r in orphan_returns {
        bad.push(format!(
            "order {}: {} returned without a capture",
            r.get::<String, _>(0),
            r.get::<String, _>(1)
        ));
    }

    // The ledger: never both a release and a capture of one hold.
    let both = sqlx::query(
        "SELECT a.order_id, a.resource FROM ledger a JOIN ledger b ON a.order_id = b.order_id AND a.resource = b.resource
         WHERE a.action = 'release' AND b.action = 'capture'",
    )
    .fetch_all(db)
    .await?;
    for r in both {
        bad.push(format!(
            "order {}: {} both released and captured",
            r.get::<String, _>(0),
            r.get::<String, _>(1)
        ));
    }
    Ok(bad)
}
