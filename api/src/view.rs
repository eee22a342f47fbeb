//! Response shapes of DESIGN.md section 6. Fields may be added; the listed ones are never
//! renamed. Times are RFC 3339 in UTC; money is integer minor units.

use orderflow_activities::store::{Account, Coupon, Order, OrderEvent, Sku};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 for Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn order(o: &Order, now_ms: i64) -> Value {
    let is_expired = o.status == "pending_payment" && o.expires_at.is_some_and(|e| e <= now_ms);
    json!({
        "order_id": o.order_id,
        "user_id": o.user_id,
        "status": o.status,
        "items": o.items.iter().map(|i| json!({
            "sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price,
        })).collect::<Vec<_>>(),
        "total_amount": o.total_amount,
        "coupon_amount": o.coupon_amount,
        "points_amount": o.points_amount,
        "wallet_amount": o.wallet_amount,
        "payable_amount": o.payable_amount,
        "currency": o.currency,
        "coupon_id": o.coupon_id,
        "expires_at": o.expires_at.map(rfc3339),
        "is_expired": is_expired,
        "cancel_reason": o.cancel_reason,
        "reject_code": o.reject_code,
        "payments": o.payments.iter().map(|p| json!({
            "payment_id": p.payment_id, "event_id": p.event_id, "amount": p.amount, "currency": p.currency,
            "status": p.status, "reason": p.reason, "received_at": rfc3339(p.received_at),
        })).collect::<Vec<_>>(),
        "refunds": o.refunds.iter().map(|r| json!({
            "payment_id": r.payment_id, "amount": r.amount, "currency": r.currency, "status": r.status,
            "reason": r.reason, "provider_refund_id": r.provider_refund_id, "failure": r.failure,
            "created_at": rfc3339(r.created_at), "updated_at": rfc3339(r.updated_at),
        })).collect::<Vec<_>>(),
        "payment_method": o.payment_method,
        "is_first_purchase": o.is_first_purchase,
        "shipment_status": o.shipment,
        "fulfilled_at": o.fulfilled_at.map(rfc3339),
        "created_at": rfc3339(o.created_at),
        "updated_at": rfc3339(o.updated_at),
    })
}

pub fn event(e: &OrderEvent) -> Value {
    json!({
        "from": e.from, "to": e.to, "reason": e.reason, "at": rfc3339(e.at),
        "step": e.step, "payment_id": e.payment_id,
    })
}

pub fn sku(s: &Sku) -> Value {
    json!({
        "sku": s.sku, "price": s.price, "available": s.available, "reserved": s.reserved, "sold": s.sold,
        "kind": s.kind, "quota": s.quota,
    })
}

pub fn coupon(c: &Coupon) -> Value {
    json!({
        "coupon_id": c.coupon_id, "user_id": c.user_id, "kind": c.kind, "amount": c.amount,
        "balance": c.balance, "reserved": c.reserved, "used": c.used, "status": c.status(),
    })
}

pub fn wallet(a: &Account) -> Value {
    json!({ "user_id": a.user_id, "balance": a.balance, "frozen": a.held, "spent": a.spent })
}

pub fn points(a: &Account) -> Value {
    json!({ "user_id": a.user_id, "points": a.balance, "reserved": a.held, "spent": a.spent })
}
