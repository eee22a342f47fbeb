//! Response shapes of the REST API (README, "The API"), as typed structs: the same definitions serialize the
//! responses and describe them in the OpenAPI document, so the two cannot drift. Fields may be
//! added; the listed ones are never renamed. Times are RFC 3339 in UTC; money is integer minor
//! units. In the document each shape has its domain name (`Order`, `Coupon`, `Sku`, ...), which
//! generated clients name their types after; the Rust names keep `View` to tell them from the
//! store's rows.

use orderflow_store::{Account, Coupon, Order, OrderEvent, Sku, events_out};
use orderflow_workflows::model::OrderStatus;
use serde::Serialize;
use utoipa::ToSchema;

pub use orderflow_store::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderItem)]
pub struct ItemView {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub payment_id: String,
    pub event_id: String,
    pub amount: i64,
    pub currency: String,
    /// `captured` (paid the order) or `unapplied` (owed back: refunded).
    pub status: String,
    pub reason: Option<String>,
    pub received_at: String,
    /// Set when the payment was only authorized (`ORDER_CAPTURE=at_shipment`): until when it
    /// can be captured.
    pub capture_before: Option<String>,
    /// When the authorization was captured (at shipment, or before it would lapse).
    pub captured_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub reason: String,
    pub provider_refund_id: Option<String>,
    pub failure: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `refund`, or `void`: the payment was only authorized, and the authorization was
    /// released (nothing was charged; `provider_refund_id` is `void-{payment_id}`).
    pub method: String,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub order_id: String,
    pub user_id: String,
    /// `pending_payment`, `paid`, `fulfilled`, `cancelled` or `rejected`.
    pub status: String,
    pub items: Vec<ItemView>,
    pub total_amount: i64,
    pub coupon_amount: i64,
    pub points_amount: i64,
    pub wallet_amount: i64,
    pub payable_amount: i64,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub expires_at: Option<String>,
    pub is_expired: bool,
    pub cancel_reason: Option<String>,
    pub reject_code: Option<String>,
    pub payments: Vec<PaymentView>,
    pub refunds: Vec<RefundView>,
    /// `online`, `wallet` or `offline`.
    pub payment_method: String,
    pub is_first_purchase: bool,
    /// `pending`, `shipped` or `intercepted`, for physical goods once paid.
    pub shipment_status: Option<String>,
    pub fulfilled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn order(o: &Order, now_ms: i64) -> OrderView {
    let is_expired =
        o.status == OrderStatus::PendingPayment && o.expires_at.is_some_and(|e| e <= now_ms);
    OrderView {
        order_id: o.order_id.clone(),
        user_id: o.user_id.clone(),
        status: o.status.as_str().to_owned(),
        items: o
            .items
            .iter()
            .map(|i| ItemView {
                sku: i.sku.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price,
            })
            .collect(),
        total_amount: o.total_amount,
        coupon_amount: o.coupon_amount,
        points_amount: o.points_amount,
        wallet_amount: o.wallet_amount,
        payable_amount: o.payable_amount,
        currency: o.currency.clone(),
        coupon_id: o.coupon_id.clone(),
        expires_at: o.expires_at.map(rfc3339),
        is_expired,
        cancel_reason: o.cancel_reason.clone(),
        reject_code: o.reject_code.clone(),
        payments: o
            .payments
            .iter()
            .map(|p| PaymentView {
                payment_id: p.payment_id.clone(),
                event_id: p.event_id.clone(),
                amount: p.amount,
                currency: p.currency.clone(),
                status: p.status.clone(),
                reason: p.reason.clone(),
                received_at: rfc3339(p.received_at),
                capture_before: p.capture_before.map(rfc3339),
                captured_at: p.captured_at.map(rfc3339),
            })
            .collect(),
        refunds: o
            .refunds
            .iter()
            .map(|r| RefundView {
                payment_id: r.payment_id.clone(),
                amount: r.amount,
                currency: r.currency.clone(),
                status: r.status.clone(),
                reason: r.reason.clone(),
                provider_refund_id: r.provider_refund_id.clone(),
                failure: r.failure.clone(),
                created_at: rfc3339(r.created_at),
                updated_at: rfc3339(r.updated_at),
                method: r.method.clone(),
            })
            .collect(),
        payment_method: o.payment_method.as_str().to_owned(),
        is_first_purchase: o.is_first_purchase.0,
        shipment_status: o.shipment.clone(),
        fulfilled_at: o.fulfilled_at.map(rfc3339),
        created_at: rfc3339(o.created_at),
        updated_at: rfc3339(o.updated_at),
    }
}

/// One step of an order's operation log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderEvent)]
pub struct EventView {
    pub from: Option<String>,
    pub to: String,
    pub reason: Option<String>,
    pub at: String,
    /// `status:<to>`, `checkout:<session>`, `payment:<id>:unapplied`, `refund:<id>:<status>`,
    /// `shipment:pending`, `fulfilment:stopped`.
    pub step: String,
    pub payment_id: Option<String>,
}

pub fn event(e: &OrderEvent) -> EventView {
    EventView {
        from: e.from.clone(),
        to: e.to.clone(),
        reason: e.reason.clone(),
        at: rfc3339(e.at),
        step: e.step.clone(),
        payment_id: e.payment_id.clone(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sku)]
pub struct SkuView {
    pub sku: String,
    pub price: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// `digital` or `physical`.
    pub kind: String,
    pub quota: Option<i64>,
}

pub fn sku(s: &Sku) -> SkuView {
    SkuView {
        sku: s.sku.clone(),
        price: s.price,
        available: s.available,
        reserved: s.reserved,
        sold: s.sold,
        kind: s.kind.clone(),
        quota: s.quota,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Coupon)]
pub struct CouponView {
    pub coupon_id: String,
    pub user_id: String,
    /// `amount` or `discount`.
    pub kind: String,
    pub amount: i64,
    pub balance: i64,
    pub reserved: i64,
    pub used: i64,
    pub status: String,
}

pub fn coupon(c: &Coupon) -> CouponView {
    CouponView {
        coupon_id: c.coupon_id.clone(),
        user_id: c.user_id.clone(),
        kind: c.kind.clone(),
        amount: c.amount,
        balance: c.balance,
        reserved: c.reserved,
        used: c.used,
        status: c.status().to_owned(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Wallet)]
pub struct WalletView {
    pub user_id: String,
    pub balance: i64,
    pub frozen: i64,
    pub spent: i64,
}

pub fn wallet(a: &Account) -> WalletView {
    WalletView {
        user_id: a.user_id.clone(),
        balance: a.balance,
        frozen: a.held,
        spent: a.spent,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Points)]
pub struct PointsView {
    pub user_id: String,
    pub points: i64,
    pub reserved: i64,
    pub spent: i64,
}

pub fn points(a: &Account) -> PointsView {
    PointsView {
        user_id: a.user_id.clone(),
        points: a.balance,
        reserved: a.held,
        spent: a.spent,
    }
}

// Bodies and answers named in the OpenAPI document (lists, checkout, webhook, errors).

/// The one error shape: `{"error": {"code", "message", "order_id"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `insufficient_stock`, `order_not_payable`, ...
    pub code: crate::error::ErrorCode,
    /// Human-readable; safe to show.
    pub message: String,
    /// The order the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub order_id: String,
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CheckoutSession)]
pub struct CheckoutView {
    pub order_id: String,
    pub payment_session_id: String,
    pub amount: i64,
    pub currency: String,
    /// Where the payer pays.
    pub pay_url: String,
    /// The order's deadline while this session is open.
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub status: String,
}

/// An order in `needs_attention` that ops asked to try again.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderRetry {
    pub order_id: String,
    /// Always `retrying`: the workflow carries on from the database.
    pub status: String,
    /// The code that had stopped it (`constraint_violation`, ...).
    pub code: String,
}

/// A refund retry that was started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundRetry {
    pub payment_id: String,
    pub order_id: String,
    pub attempt: i64,
    /// The workflow running this attempt.
    pub workflow_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Code)]
pub struct CodeView {
    pub code: String,
    pub sku: String,
    pub max_uses: i64,
    pub used_count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Redemption)]
pub struct RedemptionView {
    pub user_id: String,
    pub code: String,
    pub sku: String,
    pub entitlement_id: String,
    pub redeemed_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Entitlement)]
pub struct EntitlementView {
    pub entitlement_id: String,
    pub sku: String,
    pub quantity: i64,
    /// `order` or `redemption`.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementList {
    pub user_id: String,
    pub entitlements: Vec<EntitlementView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    pub temporal: String,
}

/// A subscriber of the events orderflow publishes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionView {
    pub subscription_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The HMAC key of every delivery's `Orderflow-Signature`: keep it as secret as a password.
    pub secret: String,
    pub event_types: Vec<String>,
    pub created_at: String,
    /// When ops disabled it; nothing is delivered to it since.
    pub disabled_at: Option<String>,
}

pub fn subscription(s: &events_out::Subscription) -> SubscriptionView {
    SubscriptionView {
        subscription_id: s.subscription_id.clone(),
        url: s.url.clone(),
        secret: s.secret.clone(),
        event_types: s.event_types.clone(),
        created_at: rfc3339(s.created_at),
        disabled_at: s.disabled_at.map(rfc3339),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubscriptionList)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
}

/// One event's delivery to one subscriber.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// The event's id: receivers deduplicate on it.
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    /// The event's place among its order's events, from 1: the order deliveries keep.
    pub seq: i64,
    /// `pending` (retried with backoff), `delivered` (a 2xx came back) or `failed` (retries
    /// ran out; redeliver to try again).
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    /// The body every attempt sends.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

pub fn delivery(d: &events_out::Delivery) -> DeliveryView {
    DeliveryView {
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        order_id: d.order_id.clone(),
        seq: d.seq,
        status: d.status.clone(),
        attempts: d.attempts,
        created_at: rfc3339(d.created_at),
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        delivered_at: d.delivered_at.map(rfc3339),
        event: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryList)]
pub struct DeliveryList {
    pub subscription_id: String,
    /// Newest event first.
    pub deliveries: Vec<DeliveryView>,
}

/// One attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    pub duration_ms: i64,
    /// The subscriber's answer; absent when none came (see `error`).
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

/// A delivery and every attempt at it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryLog)]
pub struct DeliveryLog {
    pub delivery: DeliveryView,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
}

pub fn delivery_log(
    (d, attempts): &(events_out::Delivery, Vec<events_out::Attempt>),
) -> DeliveryLog {
    DeliveryLog {
        delivery: delivery(d),
        attempts: attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: rfc3339(a.at),
                duration_ms: a.duration_ms,
                status_code: a.status_code,
                error: a.error.clone(),
            })
            .collect(),
    }
}

/// A line of a partial refund or a return.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReturnedLine)]
pub struct LineView {
    pub sku: String,
    pub quantity: i64,
}

fn lines(lines: &[orderflow_workflows::model::OrderLine]) -> Vec<LineView> {
    lines
        .iter()
        .map(|l| LineView {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect()
}

/// A partial refund of an order: an admin's (an amount or lines) or a received return's.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PartialRefund)]
pub struct PartialRefundView {
    pub refund_id: String,
    pub order_id: String,
    /// `amount`, `lines` or `return`.
    pub kind: String,
    pub return_id: Option<String>,
    pub reason: String,
    pub lines: Vec<LineView>,
    /// The part of the order's value it gives back.
    pub value: i64,
    /// Its split over what paid the order (the README states the rule).
    pub split: orderflow_activities::order_refunds::Split,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// The payment its share goes back to (none when nothing was payable).
    pub payment_id: Option<String>,
    pub provider_refund_id: Option<String>,
    pub failure: Option<String>,
    /// Its workflow in the Temporal UI.
    pub workflow_id: String,
    pub created_at: String,
    pub updated_at: String,
}

pub fn partial_refund(r: &orderflow_activities::order_refunds::OrderRefund) -> PartialRefundView {
    PartialRefundView {
        refund_id: r.refund_id.clone(),
        order_id: r.order_id.clone(),
        kind: r.kind.clone(),
        return_id: r.return_id.clone(),
        reason: r.reason.clone(),
        lines: lines(&r.lines),
        value: r.value,
        split: r.split,
        status: r.status.clone(),
        payment_id: r.payment_id.clone(),
        provider_refund_id: r.provider_refund_id.clone(),
        failure: r.failure.clone(),
        workflow_id: orderflow_workflows::order_refund_workflow_id(&r.refund_id),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartialRefundList {
    pub order_id: String,
    pub refunds: Vec<PartialRefundView>,
}

/// A return of shipped lines.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Return)]
pub struct ReturnView {
    pub return_id: String,
    pub order_id: String,
    pub lines: Vec<LineView>,
    pub reason: String,
    /// `requested`, `received`, `refunded` or `refund_failed`.
    pub status: String,
    /// The refund receiving it started.
    pub refund_id: Option<String>,
    /// `admin` or `user:<id>`.
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
}

pub fn order_return(r: &orderflow_activities::order_refunds::OrderReturn) -> ReturnView {
    ReturnView {
        return_id: r.return_id.clone(),
        order_id: r.order_id.clone(),
        lines: lines(&r.lines),
        reason: r.reason.clone(),
        status: r.status.clone(),
        refund_id: r.refund_id.clone(),
        requested_by: r.requested_by.clone(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReturnList {
    pub order_id: String,
    pub returns: Vec<ReturnView>,
}
