//! Pure decision logic of an order: pricing and what ends the wait for payment.
//!
//! No `ctx`, no I/O, no clocks: every function takes what it needs as arguments, so the rules
//! are unit-tested without a server and cannot make replay non-deterministic.

use crate::model::{
    Amounts, CancelReason, OrderStatus, PaymentMethod, PaymentReceived, PlaceOrder, Refusal,
    Resource,
};

/// How long an open checkout session holds off the deadline, unless configured.
pub const DEFAULT_CHECKOUT_WINDOW_SECS: u64 = 300;
/// How long a settled order's workflow stays open to refund late payments, unless configured.
pub const DEFAULT_LATE_PAYMENT_GRACE_SECS: u64 = 3600;

/// The discount a coupon may apply: never more than the order total.
pub fn coupon_cap(total: i64) -> i64 {
    total.max(0)
}

/// Prices an order (`docs/architecture.md`, section 3): the coupon first, then points and wallet exactly as
/// requested. Refuses with `amount_exceeds_total` if they exceed what remains.
pub fn price(total: i64, coupon: i64, points: i64, wallet: i64) -> Result<Amounts, Refusal> {
    let exceeds = || {
        Refusal::new(
            "amount_exceeds_total",
            format!(
                "points ({points}) plus wallet_amount ({wallet}) exceed the {} left to pay after the coupon",
                total.saturating_sub(coupon)
            ),
        )
    };
    if total < 0 || coupon < 0 || coupon > total || points < 0 || wallet < 0 {
        return Err(exceeds());
    }
    let payable = total
        .checked_sub(coupon)
        .and_then(|rest| rest.checked_sub(points))
        .and_then(|rest| rest.checked_sub(wallet))
        .filter(|payable| *payable >= 0)
        .ok_or_else(exceeds)?;
    Ok(Amounts {
        total,
        coupon,
        points,
        wallet,
        payable,
    })
}

/// The wallet's share of an order: an admin order paid by wallet pays everything the coupon
/// and points leave; other orders use what was asked for.
pub fn wallet_share(
    method: PaymentMethod,
    total: i64,
    coupon: i64,
    points: i64,
    requested: i64,
) -> i64 {
    match method {
        PaymentMethod::Wallet => total.saturating_sub(coupon).saturating_sub(points).max(0),
        _ => requested,
    }
}

/// Prices an order once its stock and coupon are reserved: the wallet's share for the payment
/// method ([`wallet_share`]), then [`price`].
pub fn price_order(
    method: PaymentMethod,
    total: i64,
    coupon: i64,
    points: i64,
    requested_wallet: i64,
) -> Result<Amounts, Refusal> {
    let wallet = wallet_share(method, total, coupon, points, requested_wallet);
    price(total, coupon, points, wallet)
}

/// What a priced order holds, in the order its holds are reserved: stock, then the coupon (once
/// reserved it always takes something off), points and wallet when they are used.
pub fn held(with_coupon: bool, amounts: &Amounts) -> Vec<Resource> {
    let mut held = vec![Resource::Stock];
    if with_coupon {
        held.push(Resource::Coupon);
    }
    if amounts.points > 0 {
        held.push(Resource::Points);
    }
    if amounts.wallet > 0 {
        held.push(Resource::Wallet);
    }
    held
}

/// Every resource an order's reservation may touch, before it is priced: what a reservation
/// that could not run must release (or tombstone, so that a late commit of it is refused).
pub fn may_hold(order: &PlaceOrder) -> Vec<Resource> {
    let wallet = order.payment_method == PaymentMethod::Wallet || order.wallet_amount > 0;
    let most = Amounts {
        points: order.points,
        wallet: i64::from(wallet),
        ..Amounts::default()
    };
    held(order.coupon_id.is_some(), &most)
}

/// Whether a reported payment pays exactly this order.
pub fn pays_for(payment: &PaymentReceived, payable: i64, currency: &str) -> bool {
    payment.amount == payable && payment.currency == currency
}

/// What ends the wait of a pending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A payment for the exact amount arrived: capture everything.
    Pay(PaymentReceived),
    /// Cancel with this reason (a request, or the deadline).
    Cancel(CancelReason),
    /// Nothing yet.
    Wait,
}

/// Decides what a pending order does now.
///
/// A matching payment wins over a cancel request and over the deadline when both are known at
/// the same time: the engine has already ordered the events, and money in hand is captured
/// rather than refunded. A cancel request wins over the deadline, to keep its reason.
pub fn wake(
    payments: &[PaymentReceived],
    payable: i64,
    currency: &str,
    cancel: Option<CancelReason>,
    deadline_ms: Option<i64>,
    now_ms: i64,
) -> Wake {
    if let Some(p) = payments.iter().find(|p| pays_for(p, payable, currency)) {
        return Wake::Pay(p.clone());
    }
    if let Some(reason) = cancel {
        return Wake::Cancel(reason);
    }
    match deadline_ms {
        Some(deadline) if now_ms >= deadline => Wake::Cancel(CancelReason::Timeout),
        _ => Wake::Wait,
    }
}

/// Seconds as milliseconds, saturating instead of overflowing.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// The deadline of an order created at `now_ms`.
pub fn deadline(now_ms: i64, payment_timeout_secs: u64) -> i64 {
    now_ms.saturating_add(secs_to_ms(payment_timeout_secs))
}

/// The deadline once a checkout session starts at `now_ms` (README, "Checkout window").
///
/// An open session must not be cancelled under the payer, so the deadline moves to
/// `session start + window` if that is later. It never moves past `original + window`: opening
/// session after session cannot hold stock for ever. It never moves earlier.
pub fn checkout_deadline(current_ms: i64, original_ms: i64, now_ms: i64, window_secs: u64) -> i64 {
    let window = secs_to_ms(window_secs);
    let extended = now_ms
        .saturating_add(window)
        .min(original_ms.saturating_add(window));
    current_ms.max(extended)
}

/// Whether an open session can be handed out again instead of opening a new one: it is the
/// same amount, and it was started within the window.
pub fn session_reusable(started_ms: i64, now_ms: i64, window_secs: u64) -> bool {
    now_ms < started_ms.saturating_add(secs_to_ms(window_secs))
}

/// Why a payment that did not pay for the order is refunded. Stored on the refund row.
pub fn refund_reason(
    status: OrderStatus,
    payment: &PaymentReceived,
    payable: i64,
    currency: &str,
) -> &'static str {
    if !pays_for(payment, payable, currency) {
        return "amount_mismatch";
    }
    match status {
        OrderStatus::Paid | OrderStatus::Fulfilled => "order_already_paid",
        OrderStatus::Rejected => "order_rejected",
        _ => "order_cancelled",
    }
}

/// Milliseconds from `now_ms` until `at_ms`, at least 1 (a zero timer would spin).
pub fn until(now_ms: i64, at_ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(at_ms.saturating_sub(now_ms).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(id: &str, amount: i64) -> PaymentReceived {
        PaymentReceived {
            payment_id: id.into(),
            event_id: format!("evt-{id}"),
            amount,
            currency: "USD".into(),
            capture_before_ms: None,
        }
    }

    #[test]
    fn an_order_may_hold_what_it_asks_for_and_holds_what_its_price_uses() {
        use crate::model::Resource::*;
        let mut order = PlaceOrder {
            order_id: "ord".into(),
            user_id: "u".into(),
            items: vec![],
            coupon_id: None,
            points: 0,
            wallet_amount: 0,
            payment_timeout_secs: 60,
            currency: "USD".into(),
            request_hash: String::new(),
            idempotency_key: "k".into(),
            checkout_window_secs: None,
            late_payment_grace_secs: None,
            capture: None,
            payment_method: PaymentMethod::Online,
            max_open_orders: None,
            resume: false,
        };
        assert_eq!(may_hold(&order), [Stock]);
        order.payment_method = PaymentMethod::Wallet;
        assert_eq!(may_hold(&order), [Stock, Wallet]);
        order.coupon_id = Some("c".into());
        order.points = 5;
        assert_eq!(may_hold(&order), [Stock, Coupon, Points, Wallet]);
        // A wallet order whose coupon and points cover everything holds no wallet funds.
        let amounts = price_order(PaymentMethod::Wallet, 100, 95, 5, 0).unwrap();
        assert_eq!(held(true, &amounts), [Stock, Coupon, Points]);
    }

    #[test]
    fn price_applies_coupon_then_points_then_wallet() {
        let a = price(10_000, 1_500, 500, 2_000).unwrap();
        assert_eq!(
            a,
            Amounts {
                total: 10_000,
                coupon: 1_500,
                points: 500,
                wallet: 2_000,
                payable: 6_000
            }
        );
    }

    #[test]
    fn price_allows_a_fully_covered_order_with_nothing_payable() {
        assert_eq!(price(1_000, 400, 600, 0).unwrap().payable, 0);
    }

    #[test]
    fn price_refuses_points_and_wallet_beyond_what_remains() {
        let err = price(1_000, 400, 500, 101).unwrap_err();
        assert_eq!(err.code, "amount_exceeds_total");
    }

    #[test]
    fn price_refuses_overflowing_amounts_instead_of_wrapping() {
        assert_eq!(
            price(10, 0, i64::MAX, i64::MAX).unwrap_err().code,
            "amount_exceeds_total"
        );
        assert_eq!(
            price(10, 0, -1, 0).unwrap_err().code,
            "amount_exceeds_total"
        );
    }

    #[test]
    fn a_matching_payment_wins_over_a_cancel_and_a_passed_deadline() {
        let w = wake(
            &[pay("p1", 500)],
            500,
            "USD",
            Some(CancelReason::User),
            Some(10),
            20,
        );
        assert_eq!(w, Wake::Pay(pay("p1", 500)));
    }

    #[test]
    fn a_payment_with_the_wrong_amount_or_currency_never_pays() {
        let mut eur = pay("p2", 500);
        eur.currency = "EUR".into();
        assert_eq!(
            wake(&[pay("p1", 499), eur], 500, "USD", None, Some(100), 50),
            Wake::Wait
        );
        assert_eq!(
            wake(&[pay("p1", 499)], 500, "USD", None, Some(100), 100),
            Wake::Cancel(CancelReason::Timeout)
        );
    }

    #[test]
    fn the_first_matching_payment_is_the_one_captured() {
        let w = wake(
            &[pay("p1", 1), pay("p2", 500), pay("p3", 500)],
            500,
            "USD",
            None,
            None,
            0,
        );
        assert_eq!(w, Wake::Pay(pay("p2", 500)));
    }

    #[test]
    fn a_cancel_request_keeps_its_reason_even_after_the_deadline() {
        assert_eq!(
            wake(&[], 5, "USD", Some(CancelReason::Admin), Some(10), 99),
            Wake::Cancel(CancelReason::Admin)
        );
    }

    #[test]
    fn the_deadline_fires_exactly_at_expires_at_and_not_before() {
        assert_eq!(wake(&[], 5, "USD", None, Some(1_000), 999), Wake::Wait);
        assert_eq!(
            wake(&[], 5, "USD", None, Some(1_000), 1_000),
            Wake::Cancel(CancelReason::Timeout)
        );
    }

    #[test]
    fn a_checkout_just_before_the_deadline_extends_it_by_the_window() {
        // Deadline at 10 s, session opened at 9 s with a 300 s window: 309 s.
        assert_eq!(checkout_deadline(10_000, 10_000, 9_000, 300), 309_000);
    }

    #[test]
    fn a_checkout_never_moves_the_deadline_earlier_or_past_original_plus_window() {
        // Early session: the original deadline (30 min) is later than start + window.
        assert_eq!(checkout_deadline(1_800_000, 1_800_000, 0, 300), 1_800_000);
        // Sessions chained at each new deadline stop at original + window.
        let first = checkout_deadline(10_000, 10_000, 9_000, 300);
        assert_eq!(checkout_deadline(first, 10_000, first - 1, 300), 310_000);
    }

    #[test]
    fn a_session_is_reused_only_within_its_window() {
        assert!(session_reusable(1_000, 300_999, 300));
        assert!(!session_reusable(1_000, 301_000, 300));
    }

    #[test]
    fn refund_reasons_name_why_the_money_goes_back() {
        let p = pay("p", 500);
        assert_eq!(
            refund_reason(OrderStatus::Cancelled, &p, 500, "USD"),
            "order_cancelled"
        );
        assert_eq!(
            refund_reason(OrderStatus::Paid, &p, 500, "USD"),
            "order_already_paid"
        );
        assert_eq!(
            refund_reason(OrderStatus::Paid, &p, 400, "USD"),
            "amount_mismatch"
        );
    }

    #[test]
    fn a_wallet_admin_order_pays_the_rest_from_the_wallet() {
        assert_eq!(
            wallet_share(PaymentMethod::Wallet, 3_000, 500, 200, 0),
            2_300
        );
        assert_eq!(wallet_share(PaymentMethod::Wallet, 300, 500, 0, 0), 0);
        assert_eq!(wallet_share(PaymentMethod::Online, 3_000, 500, 200, 70), 70);
        let a = price(3_000, 500, 200, 2_300).unwrap();
        assert_eq!(a.payable, 0);
    }

    #[test]
    fn deadline_does_not_overflow() {
        assert_eq!(deadline(1_000, 30), 31_000);
        assert_eq!(deadline(i64::MAX - 5, u64::MAX), i64::MAX);
    }
}
