//! Types that cross the Temporal boundary: the workflow input, messages, and activity payloads.
//!
//! These are serialized into workflow histories. Renaming a field or a variant breaks replay of
//! running orders, so changes must be additive (`#[serde(default)]`) or go behind `patched`.
//! Money is `i64` minor units; times are Unix milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
}

/// The workflow input: everything the API validated, plus the idempotency fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderLine>,
    pub coupon_id: Option<String>,
    pub points: i64,
    pub wallet_amount: i64,
    pub payment_timeout_secs: u64,
    pub currency: String,
    /// Hash of the request body; the same idempotency key with another body is refused.
    pub request_hash: String,
    pub idempotency_key: String,
    /// How long an open checkout session may hold off the deadline (`None` in orders started
    /// before checkout existed: the default applies).
    #[serde(default)]
    pub checkout_window_secs: Option<u64>,
    /// How long the workflow stays open after it settles, to refund late or duplicate
    /// payments itself. After that the API starts a `refund-{payment_id}` workflow.
    #[serde(default)]
    pub late_payment_grace_secs: Option<u64>,
    /// How the payable amount is paid: online (the default: a checkout and a webhook), or by an
    /// admin order at once, from the wallet or offline.
    #[serde(default)]
    pub payment_method: PaymentMethod,
    /// At most this many open (unpaid) orders per user, checked exactly in the reservation's
    /// transaction (`None`: no cap, as in admin orders and orders from before the cap).
    #[serde(default)]
    pub max_open_orders: Option<i64>,
    /// Set by reconciliation: the order exists and its workflow is gone; this run resumes it
    /// from the database instead of reserving (see `order.load`).
    #[serde(default)]
    pub resume: bool,
    /// When the card payment is captured, and what happens to an authorization nearing its
    /// `capture_before` (`None` in orders from before: captured at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CapturePolicy>,
}

/// When an order's card payment is captured (`ORDER_CAPTURE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureTiming {
    /// At payment, for every order.
    #[default]
    Immediate,
    /// Orders with physical goods are only authorized at checkout and captured when the
    /// shipment leaves; orders of digital goods only are still captured at once.
    AtShipment,
}

/// What an order does with an authorization still uncaptured `margin_secs` before its
/// `capture_before` (`ORDER_AUTHORIZATION_EXPIRY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationExpiry {
    /// Capture it: the money is taken, and the goods ship when they ship.
    #[default]
    Capture,
    /// Void it and cancel the order (stock, coupon, points and wallet go back).
    Void,
}

/// How card payments are captured: one setting of the deployment, carried by each order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePolicy {
    pub timing: CaptureTiming,
    pub on_expiry: AuthorizationExpiry,
    /// How long before `capture_before` the order acts (`ORDER_AUTHORIZATION_MARGIN`).
    pub margin_secs: u64,
}

/// The default `ORDER_AUTHORIZATION_MARGIN`: a day before the authorization lapses.
pub const DEFAULT_AUTHORIZATION_MARGIN_SECS: u64 = 86_400;

/// How an order is paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    #[default]
    Online,
    /// Admin order: the wallet pays everything the coupon and points leave.
    Wallet,
    /// Admin order: paid outside orderflow (cash, bank transfer).
    Offline,
}

impl PaymentMethod {
    pub const ALL: [PaymentMethod; 3] = [
        PaymentMethod::Online,
        PaymentMethod::Wallet,
        PaymentMethod::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Online => "online",
            PaymentMethod::Wallet => "wallet",
            PaymentMethod::Offline => "offline",
        }
    }

    /// The method stored as `as_str` gives it.
    pub fn parse(s: &str) -> Option<PaymentMethod> {
        [
            PaymentMethod::Online,
            PaymentMethod::Wallet,
            PaymentMethod::Offline,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// A TEXT column held a value its enum does not know: the row was not written by us, or by a
/// newer version. Reading it fails (a permanent `data_error`), it is never guessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} {value:?} is not one we store")]
pub struct UnknownValue {
    pub column: &'static str,
    pub value: String,
}

/// `TryFrom<String>` through `parse`: how the store reads an enum from its TEXT column.
macro_rules! stored_as_text {
    ($ty:ty, $column:literal) => {
        impl TryFrom<String> for $ty {
            type Error = UnknownValue;
            fn try_from(value: String) -> Result<Self, UnknownValue> {
                <$ty>::parse(&value).ok_or(UnknownValue {
                    column: $column,
                    value,
                })
            }
        }
    };
}

stored_as_text!(PaymentMethod, "payment_method");
stored_as_text!(OrderStatus, "status");

/// Order status as stored and as shown by the API and the `OrderStatus` search attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Reservations in progress; never stored in the database.
    Reserving,
    PendingPayment,
    Paid,
    /// Paid and delivered: the entitlement granted, or the shipment shipped.
    Fulfilled,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    /// Every status an order row can have (`reserving` is never stored): the one list the
    /// store, the API's filter and the metrics read.
    pub const STORED: [OrderStatus; 5] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
        OrderStatus::Rejected,
    ];

    /// A stored status from its TEXT column: the one conversion back from the database.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::STORED.into_iter().find(|st| st.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Reserving => "reserving",
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected => "rejected",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    Timeout,
    User,
    Admin,
    /// Fulfilment failed for good; the order was compensated.
    FulfilmentFailed,
    /// Reconciliation found the order pending with no workflow left to settle it.
    Reconciled,
    /// The payment's authorization neared its `capture_before` unshipped, and the deployment
    /// voids such orders (`ORDER_AUTHORIZATION_EXPIRY=void`).
    AuthorizationExpiring,
    /// The provider refused to capture the authorization (voided or lapsed): the goods cannot
    /// ship unpaid.
    CaptureFailed,
}

impl CancelReason {
    pub const ALL: [CancelReason; 7] = [
        CancelReason::Timeout,
        CancelReason::User,
        CancelReason::Admin,
        CancelReason::FulfilmentFailed,
        CancelReason::Reconciled,
        CancelReason::AuthorizationExpiring,
        CancelReason::CaptureFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Timeout => "timeout",
            CancelReason::User => "user",
            CancelReason::Admin => "admin",
            CancelReason::FulfilmentFailed => "fulfilment_failed",
            CancelReason::Reconciled => "reconciled",
            CancelReason::AuthorizationExpiring => "authorization_expiring",
            CancelReason::CaptureFailed => "capture_failed",
        }
    }
}

/// A business refusal with a stable code (`insufficient_stock`, ...), shown to API callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Refusal {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The result of a reservation activity. A refusal is a value, not a failure: the workflow
/// decides what to do with it, and it is visible as the activity result in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reservation {
    /// Reserved; `amount` is the money value the reservation covers (stock: the total price;
    /// coupon: the discount applied; points and wallet: the amount held).
    Reserved {
        amount: i64,
    },
    Refused(Refusal),
}

/// The resources an order can hold. The string form is the `resource` column of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Stock,
    Coupon,
    Points,
    Wallet,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Stock,
        Resource::Coupon,
        Resource::Points,
        Resource::Wallet,
    ];

    /// The resource stored as `as_str` gives it (the `resource` column).
    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Stock => "stock",
            Resource::Coupon => "coupon",
            Resource::Points => "points",
            Resource::Wallet => "wallet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: String,
    pub items: Vec<OrderLine>,
    /// Whose quota the lines count against.
    #[serde(default)]
    pub user_id: String,
    /// Refuse with `too_many_open_orders` if the user already holds this many open orders.
    #[serde(default)]
    pub max_open_orders: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveCoupon {
    pub order_id: String,
    pub user_id: String,
    pub coupon_id: String,
    /// The coupon applies at most this much (what remains of the total).
    pub max_discount: i64,
}

/// Points or wallet funds to hold for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveFunds {
    pub order_id: String,
    pub user_id: String,
    pub amount: i64,
}

/// Every reservation of an order at once (`order.reserve`): stock, then the coupon, points and
/// wallet, priced as [`crate::decide::price_order`] says, in one transaction. All or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveOrder {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderLine>,
    pub coupon_id: Option<String>,
    pub points: i64,
    pub wallet_amount: i64,
    pub payment_method: PaymentMethod,
    pub max_open_orders: Option<i64>,
}

impl ReserveOrder {
    pub fn of(order: &PlaceOrder) -> Self {
        ReserveOrder {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            coupon_id: order.coupon_id.clone(),
            points: order.points,
            wallet_amount: order.wallet_amount,
            payment_method: order.payment_method,
            max_open_orders: order.max_open_orders,
        }
    }
}

/// The answer of `order.reserve`. A refusal is a value, as for [`Reservation`]: it names the
/// refused resource in its code (`insufficient_stock`, `coupon_unusable`, ...), and nothing of
/// the order was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderReservation {
    Reserved(Amounts),
    Refused(Refusal),
}

/// How a hold moves once it is settled: released back (never captured), captured (sold,
/// spent), or returned after a capture (a paid order undone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Move {
    Release,
    Capture,
    Return,
}

/// Moves every listed hold of one order the same way, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleHolds {
    pub order_id: String,
    /// In reservation order, the order every move runs in (one lock order: no deadlocks).
    pub held: Vec<Resource>,
    pub how: Move,
}

/// Release or capture what an order holds of one resource. The ledger row of the reservation
/// says how much and from whom, so the order id is all the activity needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: String,
}

/// An order that stopped on a permanent error (a constraint violation, unreadable data): it
/// waits for ops in `needs_attention` instead of retrying forever. `code` is the failure's
/// stable type (`constraint_violation`, `data_error`, ...), `message` what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedsAttention {
    pub order_id: String,
    pub code: String,
    pub message: String,
    pub at_ms: i64,
}

/// Ops asked an order in `needs_attention` to try again (`order.retry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionResolved {
    pub order_id: String,
    pub at_ms: i64,
}

/// The priced order, as the workflow computed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub total: i64,
    pub coupon: i64,
    pub points: i64,
    pub wallet: i64,
    pub payable: i64,
}

/// Creates the order row once reservations are decided (`pending_payment` or `rejected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOrder {
    pub order: PlaceOrder,
    pub status: OrderStatus,
    pub amounts: Amounts,
    pub expires_at_ms: Option<i64>,
    pub rejection: Option<Refusal>,
    pub at_ms: i64,
}

/// A payment the provider reported, as the webhook forwards it to the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub payment_id: String,
    pub event_id: String,
    pub amount: i64,
    pub currency: String,
    /// Set when the payment is only authorized (`payment.authorized`): until when it can be
    /// captured (Unix ms). It is captured at shipment, and voided rather than refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_before_ms: Option<i64>,
}

/// Captures the authorization that paid an order (key `capture-{payment_id}`), and records
/// it on the payment's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureAuthorization {
    pub order_id: String,
    pub payment_id: String,
    pub at_ms: i64,
}

/// What capturing an authorization came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureOutcome {
    Captured,
    /// The provider refused for good (`authorization_expired`, `payment_voided`).
    Refused {
        code: String,
        message: String,
    },
}

/// The provider ended a checkout session unpaid (`checkout.session.expired`), as the webhook
/// forwards it to the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkPaid {
    pub order_id: String,
    /// `None` when nothing was payable (coupon, points and wallet covered everything).
    pub payment: Option<PaymentReceived>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkCancelled {
    pub order_id: String,
    pub reason: CancelReason,
    pub at_ms: i64,
}

/// Paid, in one transaction: the status and payment (`paid`) and a capture of every `held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayOrder {
    pub paid: MarkPaid,
    pub held: Vec<Resource>,
}

/// Cancelled, in one transaction: the status (`cancel`) and a release of every `held` (before
/// payment) or a return (after payment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub cancel: MarkCancelled,
    pub held: Vec<Resource>,
}

impl CancelOrder {
    pub fn new(order_id: String, reason: CancelReason, at_ms: i64, held: &[Resource]) -> Self {
        CancelOrder {
            cancel: MarkCancelled {
                order_id,
                reason,
                at_ms,
            },
            held: held.to_vec(),
        }
    }
}

/// A payment that did not pay for the order: late (after cancellation), a second payment, or a
/// wrong amount. It is recorded so that it can be refunded; it is never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUnappliedPayment {
    pub order_id: String,
    pub payment: PaymentReceived,
    pub reason: String,
    pub at_ms: i64,
}

/// What the `order.placed` update answers: the outcome of the reservation saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub order_id: String,
    pub request_hash: String,
    pub status: OrderStatus,
    pub rejection: Option<Refusal>,
}

/// Input of the `order.cancel` update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub reason: CancelReason,
}

/// What the `order.cancel` update answers once the order is settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOutcome {
    /// The final status: `cancelled`, or `paid` if a payment won the race.
    pub status: OrderStatus,
}

/// What the `order.state` query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: String,
    pub status: OrderStatus,
    pub expires_at_ms: Option<i64>,
    pub settled: bool,
    pub payments_seen: usize,
}

/// The `order.checkout` update's answer: a provider checkout session for the payable amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub session_id: String,
    pub pay_url: String,
    pub amount: i64,
    pub currency: String,
    /// Workflow time when the session was asked for.
    pub started_ms: i64,
    /// The order's deadline once this session is open.
    pub expires_at_ms: i64,
}

/// Asks the provider for a checkout session. `attempt` makes the idempotency key, so a retried
/// activity gets the same session back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCheckout {
    pub order_id: String,
    pub attempt: u32,
    pub amount: i64,
    pub currency: String,
    /// The order's deadline, at which the session stops taking payments (Unix ms). Absent in
    /// histories recorded before sessions ended with their order.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// When its payment is captured: with `AtShipment`, a session for physical goods only
    /// authorizes it.
    #[serde(default, skip_serializing_if = "is_immediate")]
    pub capture: CaptureTiming,
}

fn is_immediate(timing: &CaptureTiming) -> bool {
    *timing == CaptureTiming::Immediate
}

/// Ends the order's open checkout sessions at the provider, once the order is cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireCheckouts {
    pub order_id: String,
    /// When the order was cancelled: the sessions' log steps come after it.
    pub at_ms: i64,
}

/// What the provider answered for a checkout session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSession {
    pub session_id: String,
    pub pay_url: String,
}

/// Stores an opened session and moves the order's `expires_at` to the session's deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCheckout {
    pub order_id: String,
    pub session: CheckoutSession,
}

/// Refund one payment in full. Input of the `refund-{payment_id}` workflow and of its activities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub order_id: String,
    pub user_id: String,
    pub payment: PaymentReceived,
    /// Why it is owed back: `order_cancelled`, `order_already_paid`, `amount_mismatch`, ...
    pub reason: String,
    pub requested_at_ms: i64,
    /// The idempotency key of the attempt in progress, as the refund row says (`None` in
    /// refunds started before the row was the truth: the first attempt's key).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl RefundPayment {
    /// The idempotency key sent to the provider: the first attempt's is `refund-{payment_id}`,
    /// whoever asks; a retry that ops asked for after a refusal has its own (see the row).
    pub fn idempotency_key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| first_refund_key(&self.payment.payment_id))
    }
}

/// The provider idempotency key of a payment's first refund attempt.
pub fn first_refund_key(payment_id: &str) -> String {
    format!("refund-{payment_id}")
}

/// What the refund row said when a refund run began (`refund.begin`). The row is the truth:
/// a refund that already has an outcome never calls the provider again, whatever Temporal
/// remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundBegun {
    /// Pending: call the provider with this key (the original one on a resumed attempt).
    Call { idempotency_key: String },
    /// Already decided: this is the outcome.
    Done(RefundOutcome),
    /// The payment paid its order after all: there is nothing to refund.
    Applied,
}

/// A payment the webhook could not hand to its order: the input of `payment-{payment_id}`,
/// and the signal that reports it again (signal-with-start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrayPayment {
    pub payment: PaymentReceived,
    /// The order the event named.
    pub order_id: String,
    /// Why its order could not take it: `unknown_order`, `order_mismatch`, `amount_mismatch`,
    /// `workflow_closed`, `workflow_missing`.
    pub reason: String,
    /// A payment for an order we do not know waits this long before it is refunded, in case it
    /// raced its own order's creation.
    pub unknown_order_hold_secs: u64,
    pub received_at_ms: i64,
}

/// What the `payment-{payment_id}` decision found it must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentVerdict {
    /// Handed to its order's running workflow, which applies it (or refunds it itself).
    Applied { detail: String },
    /// Refund it: nothing can take it.
    Refund(RefundPayment),
    /// Ask again later (its order is pending without a running workflow: reconciliation
    /// repairs that order, with this payment if it pays it).
    Wait { secs: u64, detail: String },
    /// Nothing to do: it was never captured, or it is already applied or refunded elsewhere.
    NothingToDo { detail: String },
}

/// The decision of `payment-{payment_id}`, recorded on its row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDecided {
    pub payment_id: String,
    /// `applied`, `refunded`, `refund_failed` or `nothing_to_do`.
    pub state: String,
    pub detail: String,
    pub at_ms: i64,
}

/// An order as a resumed workflow finds it (`order.load`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedOrder {
    pub status: OrderStatus,
    pub amounts: Amounts,
    pub expires_at_ms: Option<i64>,
    /// The resources the order holds (a row in `holds`), in reservation order.
    pub held: Vec<Resource>,
    /// The payment that paid it, if it is paid.
    pub applied: Option<PaymentReceived>,
    /// Payments for it that were reported while no workflow ran (held decisions, unprocessed
    /// inbox events): a resumed pending order sees them before its deadline.
    pub waiting: Vec<PaymentReceived>,
}

/// Re-drives webhook-inbox events received before `before_ms` and never handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveInbox {
    pub before_ms: i64,
}

/// How a refund ended at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOutcome {
    Succeeded {
        provider_refund_id: String,
        /// The payment was only authorized and was voided: nothing was charged, and the
        /// provider holds no refund (`provider_refund_id` is `void-{payment_id}`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        voided: bool,
    },
    /// The provider refused for good (a business error, never a transient one).
    Failed { code: String, message: String },
}

/// `pending -> succeeded | failed` for the refund of `payment_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRefundResult {
    pub order_id: String,
    pub payment_id: String,
    pub outcome: RefundOutcome,
    pub at_ms: i64,
}

/// A partial refund of an order (an amount, some lines, or a received return), as recorded
/// by the API: the input of the `order-refund-{refund_id}` workflow and its first step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefundRef {
    pub refund_id: String,
    pub order_id: String,
}

/// What a partial refund's row said when its run began (`order_refund.begin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderRefundBegun {
    /// Pending, with a share for the payment: ask the provider (this request carries the
    /// share as its amount and the row's own idempotency key).
    Call(RefundPayment),
    /// Pending, with nothing for the payment: only the wallet, points or coupon get theirs.
    NoProviderShare,
    /// Already decided.
    Done(RefundOutcome),
}

/// `pending -> succeeded | failed` for a partial refund. `outcome` is `None` when the provider
/// had no share to give back (the refund succeeds without it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOrderRefund {
    pub refund_id: String,
    pub order_id: String,
    pub outcome: Option<RefundOutcome>,
    pub at_ms: i64,
}

/// Input of the `order.checkout` update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {}

/// An activity about one order at a moment of workflow time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAt {
    pub order_id: String,
    pub at_ms: i64,
}

/// What fulfilling a paid order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    /// Physical goods: a shipment is pending, and the order is fulfilled when it ships.
    /// Otherwise the order is already `fulfilled` (every line was an entitlement).
    pub needs_shipping: bool,
}

/// Input of the `order.ship` update (admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipRequest {}

/// Redeem a code for a user: the `redeem-...` workflow's input and its activity's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemCode {
    pub code: String,
    pub user_id: String,
}

/// What a redemption came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionOutcome {
    Granted {
        entitlement_id: String,
        sku: String,
        redeemed_at_ms: i64,
    },
    Refused(Refusal),
}

/// Input of the `reconcile` workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileInput {
    /// A pending order whose deadline passed more than this long ago is suspect.
    pub stale_after_secs: u64,
    /// Processed webhook-inbox rows older than this are deleted.
    pub inbox_retention_secs: u64,
    /// Inbox events still unprocessed this long after they arrived are handed on again
    /// (`None`: 60 s).
    #[serde(default)]
    pub redrive_after_secs: Option<u64>,
}

/// An order whose database row and workflow disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    pub order_id: String,
    /// The database status.
    pub status: String,
    /// The workflow's status (`running`, `terminated`, `not_found`, ...).
    pub workflow: String,
    /// What reconciliation does about it: `resume` (start its workflow again from the
    /// database), `release` (holds of an order that is closed or was never recorded) or
    /// `report`.
    pub action: String,
    pub detail: String,
    /// For `release`: the resources still reserved.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

/// One line of the reconciliation log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileEntry {
    pub run_id: String,
    pub order_id: String,
    pub action: String,
    pub detail: String,
    pub at_ms: i64,
}

/// Deletes processed inbox rows older than `before_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeInbox {
    pub before_ms: i64,
}

/// What a reconciliation run did (its workflow result, visible in the UI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub repaired: Vec<String>,
    pub reported: Vec<String>,
    pub inbox_purged: u64,
    /// Inbox events handed on again.
    #[serde(default)]
    pub inbox_redriven: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_status_round_trips_and_reserving_is_never_stored() {
        for status in OrderStatus::STORED {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("reserving"), None);
        assert_eq!(OrderStatus::parse("Paid"), None);
    }
}
